// Shared device code of every kernel family: storage load/store, the params
// blocks mirrored from src/backend/params.rs, and the counter-based noise of
// src/rng.rs. Only cuda_fp16.h is included: NVRTC has no C++ standard headers.
// Kernels are compiled with --fmad=false (src/backend/cuda/kernels.rs): every
// a·b + c is written in the CPU reference's order and must not be contracted.
#pragma once

#include <cuda_fp16.h>

// Mirrors SolverStepParams (src/backend/params.rs): 10 × u32, 11 × f32, 3 × u32 padding.
struct SolverStepParams {
    unsigned int n;
    unsigned int stride;
    unsigned int d_slot;
    unsigned int h1;
    unsigned int h2;
    unsigned int xc_slot;
    unsigned int corr_mode;
    unsigned int step;
    unsigned int seed_lo;
    unsigned int seed_hi;
    float cx;
    float ce;
    float a;
    float b0;
    float b1;
    float b2;
    float ac;
    float c0;
    float c1;
    float c2;
    float noise;
    unsigned int pad[3];
};
static_assert(sizeof(SolverStepParams) == 96, "SolverStepParams must match src/backend/params.rs");

// Mirrors OperatorParams (src/backend/params.rs): 12 × u32, 8 × f32.
struct OperatorParams {
    unsigned int n_out;
    unsigned int out_item;
    unsigned int in_item;
    unsigned int program;
    unsigned int channels;
    unsigned int height;
    unsigned int width;
    unsigned int factor;
    unsigned int rank_offset;
    unsigned int pad[3];
    float scale;
    float h[3];
    float g[3];
    float pad2;
};
static_assert(sizeof(OperatorParams) == 80, "OperatorParams must match src/backend/params.rs");

// Mirrors CpgdmParams (src/backend/params.rs): the operator's Project program,
// the pass, and 8 coefficients.
struct CpgdmParams {
    OperatorParams op;
    unsigned int pass;
    unsigned int use_g;
    unsigned int use_z;
    unsigned int pad;
    float c[12];
};
static_assert(sizeof(CpgdmParams) == 144, "CpgdmParams must match src/backend/params.rs");

// Mirrors CgParams (src/backend/params.rs): the operator's Project program,
// the pass, 5 scalars and 3 DDS coefficients.
struct CgParams {
    OperatorParams op;
    unsigned int pass;
    unsigned int iteration;
    unsigned int item;
    unsigned int chunks;
    unsigned int batch;
    unsigned int gram_from_t;
    float stall2;
    unsigned int pad;
    float identity;
    float gram;
    float rhs_x;
    float rhs_d;
    float tolerance2;
    float c[3];
};
static_assert(sizeof(CgParams) == 144, "CgParams must match src/backend/params.rs");

#define DIFFINV_NO_SLOT 0xffffffffu
#define DIFFINV_CORR_OFF 0u
#define DIFFINV_CORR_FROM_SLOT 1u
#define DIFFINV_CORR_FROM_X 2u

// Storage → f32 math → storage; f16 rounds to nearest even, like the CPU reference.
__device__ __forceinline__ float load_elem(const float* p, unsigned int i) { return p[i]; }
__device__ __forceinline__ float load_elem(const __half* p, unsigned int i) { return __half2float(p[i]); }
__device__ __forceinline__ void store_elem(float* p, unsigned int i, float v) { p[i] = v; }
__device__ __forceinline__ void store_elem(__half* p, unsigned int i, float v) { p[i] = __float2half_rn(v); }

// Philox4x32-10 of counter (index, step, 0, 0) under key (seed_lo, seed_hi),
// then Box–Muller on two 24-bit uniforms: the normal of (seed, step, index).
__device__ __forceinline__ float philox_normal(unsigned int seed_lo, unsigned int seed_hi, unsigned int step,
                                               unsigned int index) {
    unsigned int c0 = index, c1 = step, c2 = 0u, c3 = 0u;
    unsigned int k0 = seed_lo, k1 = seed_hi;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    const float u1 = (float)((c0 >> 8) + 1u) * (1.0f / 16777216.0f);
    const float u2 = (float)(c1 >> 8) * (1.0f / 16777216.0f);
    // Full-precision logf/cosf (not __logf/__cosf): the noise must match the CPU's to a few ulps.
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831855f * u2);
}

// First global thread index and the grid-stride step.
__device__ __forceinline__ unsigned int grid_start() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned int grid_step() { return blockDim.x * gridDim.x; }

// Block reductions over DIFFINV_LANES virtual lanes, whatever blockDim is:
// lane l combines terms l, l + 256, … in order, then the lanes fold pairwise
// (lane i ∘= lane i + s, s = 128 … 1). The order of every operation is fixed,
// so the result is the same bits at any block size, and deterministic.
#define DIFFINV_LANES 256u

// Fold the lane values with `op` and return the total to every thread. Every
// thread of the block must call it.
template <typename Op>
__device__ __forceinline__ float fold_lanes(float* lanes, Op op) {
    for (unsigned int s = DIFFINV_LANES / 2u; s > 0u; s >>= 1u) {
        __syncthreads();
        for (unsigned int i = threadIdx.x; i < s; i += blockDim.x) {
            lanes[i] = op(lanes[i], lanes[i + s]);
        }
    }
    __syncthreads();
    const float total = lanes[0];
    // Everyone has read the total before the lanes are reused.
    __syncthreads();
    return total;
}

// init ∘ term(0) ∘ … ∘ term(n − 1), grouped by lane as above. `term` may write
// the element it is given (each i is visited by exactly one thread).
template <typename F, typename Op>
__device__ __forceinline__ float lane_reduce(float* lanes, unsigned int n, float init, F term, Op op) {
    for (unsigned int l = threadIdx.x; l < DIFFINV_LANES; l += blockDim.x) {
        float acc = init;
        for (unsigned int i = l; i < n; i += DIFFINV_LANES) {
            acc = op(acc, term(i));
        }
        lanes[l] = acc;
    }
    return fold_lanes(lanes, op);
}

struct LaneAdd {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// Σ term(i) for i < n.
template <typename F>
__device__ __forceinline__ float lane_sum(float* lanes, unsigned int n, F term) {
    return lane_reduce(lanes, n, 0.0f, term, LaneAdd{});
}
