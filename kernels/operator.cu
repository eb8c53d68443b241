// The operator family (docs/math.md §5; src/backend/cpu/operator.rs is the
// definition): one launch computes every output element of H, Hᵀ, H⁺ or P of
// an inpainting, average-pooling or colorization operator, each on its own.
// Sums run left to right as in the CPU reference; the module is compiled with
// --fmad=false, so f32 results are bit-identical to it.
#include "common.cuh"

#include "operator.cuh"

template <typename T>
__device__ __forceinline__ void operator_apply(const OperatorParams& p, const T* in, T* out,
                                               const unsigned int* table) {
    for (unsigned int o = grid_start(); o < p.n_out; o += grid_step()) {
        const unsigned int b = o / p.out_item, r = o % p.out_item;
        // b·in_item < the input's length, which fits u32 (MAX_ELEMENTS).
        store_elem(out, o, operator_value(p, in + b * p.in_item, table, r));
    }
}

extern "C" __global__ void operator_apply_f32(const OperatorParams p, const float* in, float* out,
                                              const unsigned int* table) {
    operator_apply(p, in, out, table);
}

extern "C" __global__ void operator_apply_f16(const OperatorParams p, const __half* in, __half* out,
                                              const unsigned int* table) {
    operator_apply(p, in, out, table);
}
