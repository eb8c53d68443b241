// CUDA C++ for g++: force-included before every kernels/*.cu file the CPU
// emulation harness compiles (crates/cuda-emu/build.rs). One CUDA thread is
// one fiber of tests/cuda_emu/runtime.cpp; blocks run one at a time on the
// launching OS thread, so "per-block" state is thread_local.
//
// Emulated: the execution-space keywords, threadIdx/blockIdx/blockDim/gridDim,
// __shared__ (static and extern), __syncthreads (+ _count/_and/_or),
// __syncwarp and the full-mask warp intrinsics (shfl, shfl_up/down/xor,
// ballot/all/any) with PTX lane semantics, atomics, fences (no-ops), vector
// types and the math intrinsics the kernels use. Anything a kernel does
// that the harness cannot emulate faithfully aborts the launch with a message
// naming the kernel, the block and the source line.
#pragma once

#define DIFFINV_CUDA_EMU 1
#define __CUDACC__ 1
#define __CUDA_ARCH__ 800
#define __CUDACC_RTC__ 1

#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <source_location>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __constant__ static
// Block scope: thread_local implies static, so there is one copy per OS
// thread, and one block at a time runs on an OS thread: per-block storage.
// `extern __shared__ T name[];` (dynamic shared memory) is defined by the
// generated registry of the build script.
#define __shared__ thread_local __attribute__((aligned(16)))
#define __managed__
#define __align__(n) __attribute__((aligned(n)))

// ---- vector types (vector_types.h) ----
#define CUDA_EMU_VEC2(T, N, A) \
    struct __attribute__((aligned(A))) N##2 { T x, y; }; \
    __host__ __device__ inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define CUDA_EMU_VEC3(T, N) \
    struct N##3 { T x, y, z; }; \
    __host__ __device__ inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define CUDA_EMU_VEC4(T, N, A) \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; }; \
    __host__ __device__ inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
CUDA_EMU_VEC2(float, float, 8)
CUDA_EMU_VEC3(float, float)
CUDA_EMU_VEC4(float, float, 16)
CUDA_EMU_VEC2(int, int, 8)
CUDA_EMU_VEC3(int, int)
CUDA_EMU_VEC4(int, int, 16)
CUDA_EMU_VEC2(unsigned int, uint, 8)
CUDA_EMU_VEC3(unsigned int, uint)
CUDA_EMU_VEC4(unsigned int, uint, 16)
CUDA_EMU_VEC2(double, double, 16)
CUDA_EMU_VEC2(unsigned short, ushort, 4)
CUDA_EMU_VEC4(unsigned short, ushort, 8)
#undef CUDA_EMU_VEC2
#undef CUDA_EMU_VEC3
#undef CUDA_EMU_VEC4

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

#define warpSize 32

// ---- the runtime (tests/cuda_emu/runtime.cpp) ----
namespace cuda_emu {
extern thread_local uint3 tl_thread_idx;
extern thread_local uint3 tl_block_idx;
extern thread_local dim3 tl_block_dim;
extern thread_local dim3 tl_grid_dim;

enum BlockOp : int { BLOCK_SYNC = 0, BLOCK_COUNT = 1, BLOCK_AND = 2, BLOCK_OR = 3 };
enum WarpOp : int {
    WARP_SYNC = 0,
    WARP_SHFL_IDX = 1,
    WARP_SHFL_UP = 2,
    WARP_SHFL_DOWN = 3,
    WARP_SHFL_XOR = 4,
    WARP_BALLOT = 5,
    WARP_ALL = 6,
    WARP_ANY = 7,
};

// Wait at a block barrier; returns the reduced predicate for _count/_and/_or.
int block_barrier(int op, int pred, const char* file, unsigned line);
// A full-mask warp operation; returns the lane's result bits.
std::uint64_t warp_op(int op, unsigned mask, std::uint64_t bits, int b, int width, const char* file, unsigned line);
// Abort the running launch (never returns).
[[noreturn]] void fail_here(const char* what, const char* file, unsigned line);

template <typename T>
inline std::uint64_t to_bits(const T& v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(std::uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
}  // namespace cuda_emu

#define threadIdx (static_cast<const uint3&>(::cuda_emu::tl_thread_idx))
#define blockIdx (static_cast<const uint3&>(::cuda_emu::tl_block_idx))
#define blockDim (static_cast<const dim3&>(::cuda_emu::tl_block_dim))
#define gridDim (static_cast<const dim3&>(::cuda_emu::tl_grid_dim))

using cuda_emu_loc = std::source_location;
#define CUDA_EMU_LOC cuda_emu_loc loc = cuda_emu_loc::current()

inline void __syncthreads(CUDA_EMU_LOC) {
    ::cuda_emu::block_barrier(::cuda_emu::BLOCK_SYNC, 0, loc.file_name(), loc.line());
}
inline int __syncthreads_count(int pred, CUDA_EMU_LOC) {
    return ::cuda_emu::block_barrier(::cuda_emu::BLOCK_COUNT, pred != 0, loc.file_name(), loc.line());
}
inline int __syncthreads_and(int pred, CUDA_EMU_LOC) {
    return ::cuda_emu::block_barrier(::cuda_emu::BLOCK_AND, pred != 0, loc.file_name(), loc.line());
}
inline int __syncthreads_or(int pred, CUDA_EMU_LOC) {
    return ::cuda_emu::block_barrier(::cuda_emu::BLOCK_OR, pred != 0, loc.file_name(), loc.line());
}
inline void __syncwarp(unsigned mask = 0xffffffffu, CUDA_EMU_LOC) {
    ::cuda_emu::warp_op(::cuda_emu::WARP_SYNC, mask, 0, 0, 32, loc.file_name(), loc.line());
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, CUDA_EMU_LOC) {
    return ::cuda_emu::from_bits<T>(::cuda_emu::warp_op(::cuda_emu::WARP_SHFL_IDX, mask, ::cuda_emu::to_bits(var),
                                                        src_lane, width, loc.file_name(), loc.line()));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, CUDA_EMU_LOC) {
    return ::cuda_emu::from_bits<T>(::cuda_emu::warp_op(::cuda_emu::WARP_SHFL_UP, mask, ::cuda_emu::to_bits(var),
                                                        static_cast<int>(delta), width, loc.file_name(), loc.line()));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, CUDA_EMU_LOC) {
    return ::cuda_emu::from_bits<T>(::cuda_emu::warp_op(::cuda_emu::WARP_SHFL_DOWN, mask, ::cuda_emu::to_bits(var),
                                                        static_cast<int>(delta), width, loc.file_name(), loc.line()));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, CUDA_EMU_LOC) {
    return ::cuda_emu::from_bits<T>(::cuda_emu::warp_op(::cuda_emu::WARP_SHFL_XOR, mask, ::cuda_emu::to_bits(var),
                                                        lane_mask, width, loc.file_name(), loc.line()));
}
inline unsigned __ballot_sync(unsigned mask, int pred, CUDA_EMU_LOC) {
    return static_cast<unsigned>(
        ::cuda_emu::warp_op(::cuda_emu::WARP_BALLOT, mask, pred != 0, 0, 32, loc.file_name(), loc.line()));
}
inline int __all_sync(unsigned mask, int pred, CUDA_EMU_LOC) {
    return static_cast<int>(
        ::cuda_emu::warp_op(::cuda_emu::WARP_ALL, mask, pred != 0, 0, 32, loc.file_name(), loc.line()));
}
inline int __any_sync(unsigned mask, int pred, CUDA_EMU_LOC) {
    return static_cast<int>(
        ::cuda_emu::warp_op(::cuda_emu::WARP_ANY, mask, pred != 0, 0, 32, loc.file_name(), loc.line()));
}
// Without a full-mask operation the harness cannot say which lanes are
// converged, so code that asks is not emulated.
inline unsigned __activemask(CUDA_EMU_LOC) {
    ::cuda_emu::fail_here("__activemask is not emulated (lane convergence is not modelled)", loc.file_name(),
                          loc.line());
}

// ---- fences: blocks run one at a time and threads switch only at barriers ----
inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
template <typename T>
inline T __ldg(const T* p) { return *p; }

// ---- atomics: one OS thread runs the whole launch, so read-modify-write is atomic ----
template <typename T>
inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <typename T>
inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <typename T>
inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <typename T>
inline T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <typename T>
inline T atomicMax(T* p, T v) { T old = *p; *p = v > old ? v : old; return old; }
template <typename T>
inline T atomicAnd(T* p, T v) { T old = *p; *p = old & v; return old; }
template <typename T>
inline T atomicOr(T* p, T v) { T old = *p; *p = old | v; return old; }
template <typename T>
inline T atomicXor(T* p, T v) { T old = *p; *p = old ^ v; return old; }
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }
inline unsigned atomicInc(unsigned* p, unsigned lim) { unsigned old = *p; *p = old >= lim ? 0u : old + 1u; return old; }

// ---- integer intrinsics ----
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((std::uint64_t)a * b >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((std::int64_t)a * b >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((unsigned __int128)a * b >> 64);
}
inline long long __mul64hi(long long a, long long b) { return static_cast<long long>((__int128)a * b >> 64); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
    return static_cast<unsigned>((((std::uint64_t)hi << 32) | lo) << (s & 31) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    return static_cast<unsigned>((((std::uint64_t)hi << 32) | lo) >> (s & 31));
}
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ---- float intrinsics ----
// The fast intrinsics (__expf, __logf, __sinf, __cosf, __powf, __fdividef) are
// approximate on a GPU (2 ulp and worse, flush-to-zero); here they are glibc's
// correctly rounded or ≤1 ulp functions, so emulated results are at least as
// accurate as the GPU's. The _rn variants are exact IEEE operations on both.
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline double __longlong_as_double(long long x) { double f; std::memcpy(&f, &x, 8); return f; }
inline long long __double_as_longlong(double f) { long long x; std::memcpy(&x, &f, 8); return x; }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
inline unsigned __float2uint_rz(float x) { return static_cast<unsigned>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
