// The guidance family (docs/math.md §6.4; src/backend/cpu/guidance.rs is the
// definition): the fused passes of noiseless C-ΠGDM. Network tensors (x, ε, g,
// H⁺y, m) are T; the conjugate state (u, v) is f32. P of ε, z or g comes from
// the operator's own Project program (operator.cuh), computed inline. Every
// sum runs left to right as in the CPU reference; the module is compiled with
// --fmad=false, so f32 results are bit-identical to it.
#include "common.cuh"

#include "operator.cuh"

#define PASS_INIT 0u
#define PASS_RESIDUAL 1u
#define PASS_UPDATE 2u

// P applied to `src` (a whole batch) at element o.
template <typename T>
__device__ __forceinline__ float project(const OperatorParams& op, const T* src, const unsigned int* table,
                                         unsigned int o) {
    const unsigned int b = o / op.out_item, r = o % op.out_item;
    return operator_value(op, src + b * op.in_item, table, r);
}

template <typename T>
__device__ __forceinline__ void cpgdm_pass(const CpgdmParams& p, float* u, float* v, T* x, T* m, const T* eps,
                                           const T* g, const T* hy, const unsigned int* table) {
    const float* c = p.c;
    for (unsigned int o = grid_start(); o < p.op.n_out; o += grid_step()) {
        if (p.pass == PASS_INIT) {
            const float z = load_elem(eps, o), pz = project(p.op, eps, table, o);
            u[o] = c[0] * load_elem(hy, o) + c[1] * pz;
            v[o] = c[2] * (z - pz);
            store_elem(x, o, c[3] * load_elem(hy, o) + c[4] * z + c[5] * pz);
        } else if (p.pass == PASS_RESIDUAL) {
            const float pe = project(p.op, eps, table, o);
            store_elem(m, o, load_elem(hy, o) - c[0] * u[o] + c[1] * pe);
        } else if (p.pass == PASS_UPDATE) {
            const float e = load_elem(eps, o), pe = project(p.op, eps, table, o);
            float un = c[0] * u[o] + c[1] * load_elem(hy, o) + c[2] * pe;
            float vn = c[8] * v[o] + c[4] * (e - pe);
            if (p.use_g != 0u) {
                const float pg = project(p.op, g, table, o);
                un = un + c[3] * pg;
                vn = vn + c[5] * (load_elem(g, o) - pg);
            }
            if (p.use_z != 0u) {
                // The noise z is in the m buffer (the residual is spent by now).
                const float z = load_elem(m, o), pz = project(p.op, (const T*)m, table, o);
                un = un + c[9] * pz;
                vn = vn + c[9] * (z - pz);
            }
            u[o] = un;
            v[o] = vn;
            store_elem(x, o, c[6] * vn + c[7] * un);
        }
    }
}

extern "C" __global__ void cpgdm_pass_f32(const CpgdmParams p, float* u, float* v, float* x, float* m,
                                          const float* eps, const float* g, const float* hy,
                                          const unsigned int* table) {
    cpgdm_pass(p, u, v, x, m, eps, g, hy, table);
}

extern "C" __global__ void cpgdm_pass_f16(const CpgdmParams p, float* u, float* v, __half* x, __half* m,
                                          const __half* eps, const __half* g, const __half* hy,
                                          const unsigned int* table) {
    cpgdm_pass(p, u, v, x, m, eps, g, hy, table);
}
