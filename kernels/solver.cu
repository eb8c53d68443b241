// The fused solver step (src/solver/step.rs documents the update; the CPU
// backend is its definition): one launch reads x, the model output and the
// history slots and writes x', the new data prediction and the corrected sample.
#include "common.cuh"

struct StepValues {
    float x;   // x'
    float d;   // D, for the history slot
    float xc;  // x^c, for the corrector slot
};

// Whether the corrector runs: it needs its slot (the CPU reference skips a
// corrector without one). The host never launches that combination, but a
// missing slot must not become an index of 0xffffffff·stride.
__device__ __forceinline__ bool corrector_on(const SolverStepParams& p) {
    return p.corr_mode != DIFFINV_CORR_OFF && p.xc_slot != DIFFINV_NO_SLOT;
}

// The update of one element in f32, every sum left to right as in the CPU
// reference. The runtime compiles with --fmad=false, so each a·b + c is a
// rounded multiply then a rounded add, as on the CPU: f32 results are
// bit-identical to the reference except for the noise term (logf/cosf ulps).
__device__ __forceinline__ StepValues step_values(const SolverStepParams& p, float x, float m, float h1, float h2,
                                                  float xc_prev, unsigned int index) {
    StepValues v;
    v.d = p.cx * x - p.ce * m;
    float base = x;
    v.xc = 0.0f;
    if (corrector_on(p)) {
        const float prev = p.corr_mode == DIFFINV_CORR_FROM_SLOT ? xc_prev : x;
        v.xc = p.ac * prev + p.c0 * v.d + p.c1 * h1 + p.c2 * h2;
        base = v.xc;
    }
    float out = p.a * base + p.b0 * v.d + p.b1 * h1 + p.b2 * h2;
    if (p.noise != 0.0f) {
        out += p.noise * philox_normal(p.seed_lo, p.seed_hi, p.step, index);
    }
    v.x = out;
    return v;
}

// Offset of element i of a state slot; absent slots are never dereferenced.
__device__ __forceinline__ unsigned int slot_at(const SolverStepParams& p, unsigned int slot, unsigned int i) {
    return slot * p.stride + i;
}

template <typename T>
__device__ __forceinline__ float slot_or_zero(const SolverStepParams& p, const T* state, unsigned int slot,
                                              unsigned int i) {
    return slot == DIFFINV_NO_SLOT ? 0.0f : load_elem(state, slot_at(p, slot, i));
}

template <typename T>
__device__ __forceinline__ void step_element(const SolverStepParams& p, T* x, const T* m, T* state, unsigned int i) {
    const float xc_prev = corrector_on(p) && p.corr_mode == DIFFINV_CORR_FROM_SLOT
                              ? load_elem(state, slot_at(p, p.xc_slot, i))
                              : 0.0f;
    const StepValues v = step_values(p, load_elem(x, i), load_elem(m, i), slot_or_zero(p, state, p.h1, i),
                                     slot_or_zero(p, state, p.h2, i), xc_prev, i);
    if (p.d_slot != DIFFINV_NO_SLOT) store_elem(state, slot_at(p, p.d_slot, i), v.d);
    if (corrector_on(p)) store_elem(state, slot_at(p, p.xc_slot, i), v.xc);
    store_elem(x, i, v.x);
}

// f16 pairs (2q, 2q+1) through __half2: one 32-bit load/store per tensor
// instead of two 16-bit ones. x and the model output come from allocations
// (≥ 256-byte aligned) and slots start at multiples of 64 elements (128 bytes),
// so every pair is 4-byte aligned. Math stays f32 per element: the result must
// round exactly like the CPU's, which __hfma2-style half math would not.
__device__ __forceinline__ float2 pair_or_zero(const SolverStepParams& p, const __half* state, unsigned int slot,
                                               unsigned int i) {
    if (slot == DIFFINV_NO_SLOT) return make_float2(0.0f, 0.0f);
    return __half22float2(*reinterpret_cast<const __half2*>(state + slot_at(p, slot, i)));
}

__device__ __forceinline__ void store_pair(__half* dst, float lo, float hi) {
    *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(lo, hi);
}

__device__ __forceinline__ void step_pair(const SolverStepParams& p, __half* x, const __half* m, __half* state,
                                          unsigned int q) {
    const unsigned int i = 2u * q;
    const float2 xv = __half22float2(*reinterpret_cast<const __half2*>(x + i));
    const float2 mv = __half22float2(*reinterpret_cast<const __half2*>(m + i));
    const float2 h1 = pair_or_zero(p, state, p.h1, i);
    const float2 h2 = pair_or_zero(p, state, p.h2, i);
    const float2 xc_prev = corrector_on(p) && p.corr_mode == DIFFINV_CORR_FROM_SLOT
                               ? pair_or_zero(p, state, p.xc_slot, i)
                               : make_float2(0.0f, 0.0f);
    const StepValues lo = step_values(p, xv.x, mv.x, h1.x, h2.x, xc_prev.x, i);
    const StepValues hi = step_values(p, xv.y, mv.y, h1.y, h2.y, xc_prev.y, i + 1u);
    if (p.d_slot != DIFFINV_NO_SLOT) store_pair(state + slot_at(p, p.d_slot, i), lo.d, hi.d);
    if (corrector_on(p)) store_pair(state + slot_at(p, p.xc_slot, i), lo.xc, hi.xc);
    store_pair(x + i, lo.x, hi.x);
}

extern "C" __global__ void solver_step_f32(const SolverStepParams p, float* x, const float* m, float* state) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        step_element(p, x, m, state, i);
    }
}

// One thread per pair; when n is odd the last element is done singly by
// thread 0, so no element is written twice. Noise keys stay element indices
// (2q and 2q+1), so the draws do not depend on the pairing.
extern "C" __global__ void solver_step_f16(const SolverStepParams p, __half* x, const __half* m, __half* state) {
    const unsigned int pairs = p.n / 2u;
    for (unsigned int q = grid_start(); q < pairs; q += grid_step()) {
        step_pair(p, x, m, state, q);
    }
    if ((p.n & 1u) != 0u && grid_start() == 0u) {
        step_element(p, x, m, state, p.n - 1u);
    }
}
