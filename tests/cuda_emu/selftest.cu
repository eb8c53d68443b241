// Kernels that test the CPU emulation harness itself (tests/cuda_emu_harness.rs).
// Compiled with the CUDA shim like kernels/*.cu; never compiled by NVRTC.
#include <cuda_fp16.h>

// Threads below `limit` wait at a barrier the others skip: must be reported.
extern "C" __global__ void selftest_divergent_sync(unsigned limit, int* out) {
    if (threadIdx.x < limit) {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// Block sum through shared memory for any blockDim.x ≤ 1024: warp sums by
// __shfl_down_sync, then warp 0 sums the per-warp partials. Exact on integers.
extern "C" __global__ void selftest_block_sum(const int* in, unsigned n, long long* out) {
    __shared__ long long partial[32];
    long long v = 0;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) v += in[i];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = (blockDim.x + 31) / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? partial[lane] : 0;
        for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
        if (lane == 0) atomicAdd(reinterpret_cast<unsigned long long*>(out), static_cast<unsigned long long>(v));
    }
}

// Every shuffle flavour on a known pattern (value = 100·lane + 7): each lane
// writes 8 results. `width` exercises sub-warp segments.
extern "C" __global__ void selftest_shuffles(int width, int* out) {
    const int lane = threadIdx.x % 32;
    const int v = 100 * lane + 7;
    int* o = out + 8 * threadIdx.x;
    o[0] = __shfl_sync(0xffffffffu, v, 3, width);
    o[1] = __shfl_sync(0xffffffffu, v, lane + 5, width);
    o[2] = __shfl_up_sync(0xffffffffu, v, 3, width);
    o[3] = __shfl_down_sync(0xffffffffu, v, 3, width);
    o[4] = __shfl_xor_sync(0xffffffffu, v, 5, width);
    o[5] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
    o[6] = __all_sync(0xffffffffu, lane < 32) + 2 * __any_sync(0xffffffffu, lane == 31);
    // Floats and halves move bit for bit.
    const float f = __shfl_xor_sync(0xffffffffu, 0.5f + lane, 1, width);
    const __half h = __shfl_down_sync(0xffffffffu, __float2half(0.25f * lane), 1, width);
    o[7] = static_cast<int>(f * 4.0f) * 1000 + static_cast<int>(__half2float(h) * 4.0f);
}

// A warp reduction with __shfl_down_sync over the whole block: with
// blockDim.x not a multiple of 32 the last warp's lanes read missing lanes.
extern "C" __global__ void selftest_partial_warp(float* out) {
    float v = threadIdx.x;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

// A shuffle with a partial mask is not emulated.
extern "C" __global__ void selftest_partial_mask(int* out) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, static_cast<int>(threadIdx.x), 0);
}

// Some lanes of a warp return before a full-mask shuffle.
extern "C" __global__ void selftest_warp_exit(int* out) {
    if (threadIdx.x % 32 >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

// __syncthreads_count / _and / _or, dynamic shared memory, a 2-D block.
extern "C" __global__ void selftest_block_ops(int* out) {
    extern __shared__ float dyn[];
    const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
    const unsigned n = blockDim.x * blockDim.y;
    dyn[t] = static_cast<float>(t);
    const int count = __syncthreads_count(t % 2 == 0);
    const int all = __syncthreads_and(t < n);
    const int any = __syncthreads_or(t == n - 1);
    // Read a value another thread wrote before the barriers.
    const float mirrored = dyn[n - 1 - t];
    out[4 * t + 0] = count;
    out[4 * t + 1] = all;
    out[4 * t + 2] = any;
    out[4 * t + 3] = static_cast<int>(mirrored) + 1000 * static_cast<int>(blockIdx.x);
}

// Writes one element past `n`: the emulated device's red zone must catch it.
extern "C" __global__ void selftest_write_past(float* out, unsigned n) {
    if (threadIdx.x == 0) out[n] = 1.0f;
}
