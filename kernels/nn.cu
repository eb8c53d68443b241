// The nn family: the layers of a UNet forward (src/ops/nn.rs documents each
// op; src/backend/cpu/nn.rs is the definition). Every op is one template over
// its storage type T, float or __half, with an extern "C" entry point for
// each (nn_<op>_f32, nn_<op>_f16): values are widened to f32 on load
// (load_elem, common.cuh) and each output is rounded to T once on store
// (store_elem: round to nearest even for __half, as the CPU definition
// rounds), so the math is f32 in either storage. time_proj's timesteps are
// f32 in both. The module is compiled with FMA contraction (a tolerance, not
// bit-exactness, is the family's promise).
//
// conv2d and matmul are one GEMM body: a block of NN_THREADS threads computes
// a 64×64 output tile, each thread a 4×4 micro-tile of it, from 16-deep tiles
// of both operands staged in shared memory — an operand element is read from
// global memory once per tile rather than once per output, and each shared
// read feeds four multiply-adds. conv2d is an implicit GEMM (the im2col matrix
// is never stored: its tile is gathered from the input as it is loaded).
// The shared tiles are f32 in either storage (f16 operands are widened as a
// tile is staged), so the inner loop is the same for both.
// Tiles and batch items stride over the launched grid, so any size runs
// within the 65,535-blocks-per-dimension limit.
//
// GroupNorm and softmax run one block per (item, group) or row, with the
// fixed-order lane reductions of common.cuh: the same bits at any blockDim.
// The element-wise ops run one thread per output element, grid-stride.
#include "common.cuh"

// Threads of a GEMM block (NN_GEMM_THREADS in src/backend/cuda/nn.rs: the
// launcher always uses it), the output tile side, the tile depth, and the
// micro-tile side of one thread: (64 / 4)² = 256 threads cover the tile.
#define NN_THREADS 256u
#define NN_TILE 64u
#define NN_TILE_K 16u
#define NN_MICRO 4u
// Row padding of the shared tiles: rows stay 16-byte aligned for float4
// reads, and the 16 rows written by one warp no longer share a bank.
#define NN_TILE_PAD 4u

// Mirrors ConvParams (src/backend/cuda/nn.rs): 12 × u32.
struct NnConvParams {
    unsigned int batch;
    unsigned int cin;
    unsigned int h;
    unsigned int w;
    unsigned int cout;
    unsigned int ho;
    unsigned int wo;
    unsigned int k;
    unsigned int stride;
    unsigned int pad;
    unsigned int has_bias;
    unsigned int unused;
};
static_assert(sizeof(NnConvParams) == 48, "NnConvParams must match src/backend/cuda/nn.rs");

// Mirrors MatmulParams (src/backend/cuda/nn.rs): 8 × u32, 1 × f32, 3 × u32.
struct NnMatmulParams {
    unsigned int batch;
    unsigned int m;
    unsigned int n;
    unsigned int k;
    unsigned int trans_a;
    unsigned int trans_b;
    unsigned int has_bias;
    unsigned int accumulate;
    float alpha;
    unsigned int unused[3];
};
static_assert(sizeof(NnMatmulParams) == 48, "NnMatmulParams must match src/backend/cuda/nn.rs");

// Mirrors GroupNormParams (src/backend/cuda/nn.rs): 5 × u32, 1 × f32, 2 × u32.
struct NnGroupNormParams {
    unsigned int batch;
    unsigned int channels;
    unsigned int hw;
    unsigned int groups;
    unsigned int silu;
    float eps;
    unsigned int unused[2];
};
static_assert(sizeof(NnGroupNormParams) == 32, "NnGroupNormParams must match src/backend/cuda/nn.rs");

// Mirrors SoftmaxParams (src/backend/cuda/nn.rs): 2 × u32, 1 × f32, 1 × u32.
struct NnSoftmaxParams {
    unsigned int rows;
    unsigned int cols;
    float scale;
    unsigned int unused;
};
static_assert(sizeof(NnSoftmaxParams) == 16, "NnSoftmaxParams must match src/backend/cuda/nn.rs");

// Mirrors ElementParams (src/backend/cuda/nn.rs): 9 × u32, 1 × f32, 2 × u32.
// `n` is the element count every element-wise entry iterates; the other
// fields belong to the entry named beside them.
struct NnElementParams {
    unsigned int n;
    unsigned int h;         // upsample: input rows
    unsigned int w;         // upsample: input columns
    unsigned int hw;        // concat, add_bias: values per plane
    unsigned int c;         // concat: channels of the part
    unsigned int c_total;   // concat: channels of the output
    unsigned int c_offset;  // concat: first output channel of the part
    unsigned int dim;       // time_proj: embedding width
    unsigned int flip_sin_to_cos;  // time_proj
    float shift;            // time_proj: dim/2 − freq_shift, rounded to f32; affine: the shift
    float scale;            // affine: the factor
    unsigned int unused;
};
static_assert(sizeof(NnElementParams) == 48, "NnElementParams must match src/backend/cuda/nn.rs");

// A shared operand tile: [kk][i], i the row of A or the column of B, so a
// thread reads its four consecutive rows (columns) of one kk as a float4.
typedef float NnTile[NN_TILE_K][NN_TILE + NN_TILE_PAD];

// Stage operand values load(i, k0 + kk) for i < 64, kk < 16. Consecutive
// threads take consecutive kk when the operand is stored with k contiguous
// (A row-major, Bᵀ, conv weights) and consecutive i otherwise, so global
// reads coalesce either way.
template <typename Load>
__device__ __forceinline__ void load_tile(NnTile& tile, bool k_contiguous, unsigned int k0, Load load) {
    for (unsigned int e = threadIdx.x; e < NN_TILE * NN_TILE_K; e += NN_THREADS) {
        const unsigned int i = k_contiguous ? e / NN_TILE_K : e % NN_TILE;
        const unsigned int kk = k_contiguous ? e % NN_TILE_K : e / NN_TILE;
        tile[kk][i] = load(i, k0 + kk);
    }
}

// One 64×64 output tile of A·B over a depth of kdim: load_a(i, kk) is row i of
// the tile's A rows at depth kk, load_b(i, kk) column i of its B columns; both
// return 0 outside the matrices (so padded depths add exact zeros). Each sum
// runs over kk in increasing order, as the definition sums; store(i, j, Σ)
// sees every output of the tile once and drops those outside the matrix.
// Every thread of the block must call it (it synchronises).
template <typename LoadA, typename LoadB, typename Store>
__device__ __forceinline__ void gemm_tile(unsigned int kdim, bool a_k_contiguous, bool b_k_contiguous, LoadA load_a,
                                          LoadB load_b, Store store) {
    __shared__ __align__(16) NnTile a_tile;
    __shared__ __align__(16) NnTile b_tile;
    const unsigned int ti = threadIdx.x / (NN_TILE / NN_MICRO) * NN_MICRO;
    const unsigned int tj = threadIdx.x % (NN_TILE / NN_MICRO) * NN_MICRO;
    float acc[NN_MICRO][NN_MICRO];
#pragma unroll
    for (unsigned int i = 0; i < NN_MICRO; ++i) {
#pragma unroll
        for (unsigned int j = 0; j < NN_MICRO; ++j) {
            acc[i][j] = 0.0f;
        }
    }
    for (unsigned int k0 = 0; k0 < kdim; k0 += NN_TILE_K) {
        load_tile(a_tile, a_k_contiguous, k0, load_a);
        load_tile(b_tile, b_k_contiguous, k0, load_b);
        __syncthreads();
#pragma unroll
        for (unsigned int kk = 0; kk < NN_TILE_K; ++kk) {
            const float4 a4 = *reinterpret_cast<const float4*>(&a_tile[kk][ti]);
            const float4 b4 = *reinterpret_cast<const float4*>(&b_tile[kk][tj]);
            const float a[NN_MICRO] = {a4.x, a4.y, a4.z, a4.w};
            const float b[NN_MICRO] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (unsigned int i = 0; i < NN_MICRO; ++i) {
#pragma unroll
                for (unsigned int j = 0; j < NN_MICRO; ++j) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        // Every thread is done with the tiles before the next depth overwrites them.
        __syncthreads();
    }
#pragma unroll
    for (unsigned int i = 0; i < NN_MICRO; ++i) {
#pragma unroll
        for (unsigned int j = 0; j < NN_MICRO; ++j) {
            store(ti + i, tj + j, acc[i][j]);
        }
    }
}

// Element (kk, col) of one item's implicit im2col matrix — kk = (ci, ky, kx),
// col = (oy, ox) — and 0 in the padding or past either end.
template <typename T>
__device__ __forceinline__ float conv_patch(const NnConvParams& p, const T* x, unsigned int kk, unsigned int col) {
    const unsigned int window = p.k * p.k;
    if (kk >= p.cin * window || col >= p.ho * p.wo) {
        return 0.0f;
    }
    const unsigned int ci = kk / window, r = kk % window;
    // Padded coordinates, unsigned: below `pad` is the zero border.
    const unsigned int py = (col / p.wo) * p.stride + r / p.k;
    const unsigned int px = (col % p.wo) * p.stride + r % p.k;
    if (py < p.pad || px < p.pad || py - p.pad >= p.h || px - p.pad >= p.w) {
        return 0.0f;
    }
    return load_elem(x, (ci * p.h + (py - p.pad)) * p.w + (px - p.pad));
}

// out[b, co, oy, ox] = bias[co] + Σ w[co, ci, ky, kx] · x[b, ci, oy·s − p + ky, ox·s − p + kx]:
// the GEMM of the weights [cout, cin·k·k] and item b's im2col matrix; grid
// (pixel tiles, cout tiles, items). `bias` is unread without has_bias.
template <typename T>
__device__ __forceinline__ void nn_conv2d(const NnConvParams& p, const T* x, const T* w, const T* bias, T* out) {
    const unsigned int depth = p.cin * p.k * p.k, pixels = p.ho * p.wo;
    const unsigned int tiles_n = (pixels + NN_TILE - 1u) / NN_TILE;
    const unsigned int tiles_m = (p.cout + NN_TILE - 1u) / NN_TILE;
    for (unsigned int b = blockIdx.z; b < p.batch; b += gridDim.z) {
        const T* xb = x + b * p.cin * p.h * p.w;
        T* ob = out + b * p.cout * pixels;
        for (unsigned int tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
            const unsigned int m0 = tm * NN_TILE;
            for (unsigned int tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
                const unsigned int n0 = tn * NN_TILE;
                gemm_tile(
                    depth, true, false,
                    [&](unsigned int i, unsigned int kk) {
                        const unsigned int co = m0 + i;
                        return co < p.cout && kk < depth ? load_elem(w, co * depth + kk) : 0.0f;
                    },
                    [&](unsigned int i, unsigned int kk) { return conv_patch(p, xb, kk, n0 + i); },
                    [&](unsigned int i, unsigned int j, float v) {
                        const unsigned int co = m0 + i, px = n0 + j;
                        if (co < p.cout && px < pixels) {
                            if (p.has_bias != 0u) {
                                v += load_elem(bias, co);
                            }
                            store_elem(ob, co * pixels + px, v);
                        }
                    });
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(NN_THREADS)
    nn_conv2d_f32(const NnConvParams p, const float* x, const float* w, const float* bias, float* out) {
    nn_conv2d(p, x, w, bias, out);
}

extern "C" __global__ void __launch_bounds__(NN_THREADS)
    nn_conv2d_f16(const NnConvParams p, const __half* x, const __half* w, const __half* bias, __half* out) {
    nn_conv2d(p, x, w, bias, out);
}

// out[z, r, c] = α Σ_i A[z, r, i] B[z, i, c] + bias[c] (+ out[z, r, c] when
// accumulating); A stored [z, k, m] when trans_a, B [z, n, k] when trans_b;
// grid (column tiles, row tiles, batch). `bias` is unread without has_bias.
template <typename T>
__device__ __forceinline__ void nn_matmul(const NnMatmulParams& p, const T* a, const T* b, const T* bias, T* out) {
    const unsigned int tiles_n = (p.n + NN_TILE - 1u) / NN_TILE;
    const unsigned int tiles_m = (p.m + NN_TILE - 1u) / NN_TILE;
    for (unsigned int z = blockIdx.z; z < p.batch; z += gridDim.z) {
        const T* az = a + z * p.m * p.k;
        const T* bz = b + z * p.k * p.n;
        T* oz = out + z * p.m * p.n;
        for (unsigned int tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
            const unsigned int m0 = tm * NN_TILE;
            for (unsigned int tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
                const unsigned int n0 = tn * NN_TILE;
                gemm_tile(
                    p.k, p.trans_a == 0u, p.trans_b != 0u,
                    [&](unsigned int i, unsigned int kk) {
                        const unsigned int r = m0 + i;
                        if (r >= p.m || kk >= p.k) {
                            return 0.0f;
                        }
                        return p.trans_a != 0u ? load_elem(az, kk * p.m + r) : load_elem(az, r * p.k + kk);
                    },
                    [&](unsigned int i, unsigned int kk) {
                        const unsigned int c = n0 + i;
                        if (c >= p.n || kk >= p.k) {
                            return 0.0f;
                        }
                        return p.trans_b != 0u ? load_elem(bz, c * p.k + kk) : load_elem(bz, kk * p.n + c);
                    },
                    [&](unsigned int i, unsigned int j, float v) {
                        const unsigned int r = m0 + i, c = n0 + j;
                        if (r < p.m && c < p.n) {
                            float y = p.alpha * v;
                            if (p.has_bias != 0u) {
                                y += load_elem(bias, c);
                            }
                            if (p.accumulate != 0u) {
                                y += load_elem(oz, r * p.n + c);
                            }
                            store_elem(oz, r * p.n + c, y);
                        }
                    });
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(NN_THREADS)
    nn_matmul_f32(const NnMatmulParams p, const float* a, const float* b, const float* bias, float* out) {
    nn_matmul(p, a, b, bias, out);
}

extern "C" __global__ void __launch_bounds__(NN_THREADS)
    nn_matmul_f16(const NnMatmulParams p, const __half* a, const __half* b, const __half* bias, __half* out) {
    nn_matmul(p, a, b, bias, out);
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// Per (item, group) of cg = channels/groups channels × hw pixels: standardise,
// then γ, β per channel and optionally SiLU. One block per (item, group).
template <typename T>
__device__ __forceinline__ void nn_group_norm(const NnGroupNormParams& p, const T* x, const T* gamma,
                                              const T* beta, T* out) {
    __shared__ float lanes[DIFFINV_LANES];
    const unsigned int cg = p.channels / p.groups, count = cg * p.hw;
    for (unsigned int item = blockIdx.x; item < p.batch * p.groups; item += gridDim.x) {
        const unsigned int g = item % p.groups;
        const T* xs = x + ((item / p.groups) * p.channels + g * cg) * p.hw;
        T* os = out + ((item / p.groups) * p.channels + g * cg) * p.hw;
        const float mean = lane_sum(lanes, count, [&](unsigned int i) { return load_elem(xs, i); }) / (float)count;
        // Two passes (mean, then squared deviations) keep the variance
        // non-negative and accurate in f32 without a compensated sum.
        const float var = lane_sum(lanes, count, [&](unsigned int i) {
                              const float d = load_elem(xs, i) - mean;
                              return d * d;
                          }) /
                          (float)count;
        const float rstd = 1.0f / sqrtf(var + p.eps);
        for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) {
            const unsigned int ch = g * cg + i / p.hw;
            const float v = (load_elem(xs, i) - mean) * rstd * load_elem(gamma, ch) + load_elem(beta, ch);
            store_elem(os, i, p.silu != 0u ? silu(v) : v);
        }
    }
}

extern "C" __global__ void nn_group_norm_f32(const NnGroupNormParams p, const float* x, const float* gamma,
                                             const float* beta, float* out) {
    nn_group_norm(p, x, gamma, beta, out);
}

extern "C" __global__ void nn_group_norm_f16(const NnGroupNormParams p, const __half* x, const __half* gamma,
                                             const __half* beta, __half* out) {
    nn_group_norm(p, x, gamma, beta, out);
}

struct LaneMax {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Row r of out = softmax(scale · row r of x), max-subtracted so exp never
// overflows. One block per row.
template <typename T>
__device__ __forceinline__ void nn_softmax(const NnSoftmaxParams& p, const T* x, T* out) {
    __shared__ float lanes[DIFFINV_LANES];
    // −∞: the identity of max (NVRTC has no <cmath> for INFINITY).
    const float lowest = __int_as_float(static_cast<int>(0xff800000u));
    for (unsigned int r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const T* row = x + r * p.cols;
        T* dst = out + r * p.cols;
        const float mx = lane_reduce(
            lanes, p.cols, lowest, [&](unsigned int i) { return p.scale * load_elem(row, i); }, LaneMax{});
        const float sum =
            lane_sum(lanes, p.cols, [&](unsigned int i) { return expf(p.scale * load_elem(row, i) - mx); });
        for (unsigned int i = threadIdx.x; i < p.cols; i += blockDim.x) {
            store_elem(dst, i, expf(p.scale * load_elem(row, i) - mx) / sum);
        }
    }
}

extern "C" __global__ void nn_softmax_f32(const NnSoftmaxParams p, const float* x, float* out) {
    nn_softmax(p, x, out);
}

extern "C" __global__ void nn_softmax_f16(const NnSoftmaxParams p, const __half* x, __half* out) {
    nn_softmax(p, x, out);
}

// ---- element-wise: one output element per thread, grid-stride over p.n

// out = a + b.
template <typename T>
__device__ __forceinline__ void nn_add(const NnElementParams& p, const T* a, const T* b, T* out) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        store_elem(out, i, load_elem(a, i) + load_elem(b, i));
    }
}

extern "C" __global__ void nn_add_f32(const NnElementParams p, const float* a, const float* b, float* out) {
    nn_add(p, a, b, out);
}

extern "C" __global__ void nn_add_f16(const NnElementParams p, const __half* a, const __half* b, __half* out) {
    nn_add(p, a, b, out);
}

// out = silu(a).
template <typename T>
__device__ __forceinline__ void nn_silu(const NnElementParams& p, const T* a, T* out) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        store_elem(out, i, silu(load_elem(a, i)));
    }
}

extern "C" __global__ void nn_silu_f32(const NnElementParams p, const float* a, float* out) {
    nn_silu(p, a, out);
}

extern "C" __global__ void nn_silu_f16(const NnElementParams p, const __half* a, __half* out) {
    nn_silu(p, a, out);
}

// out = scale·a + shift, the product rounded before the sum (no FMA), as the
// definition computes it.
template <typename T>
__device__ __forceinline__ void nn_affine(const NnElementParams& p, const T* a, T* out) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        store_elem(out, i, __fmul_rn(p.scale, load_elem(a, i)) + p.shift);
    }
}

extern "C" __global__ void nn_affine_f32(const NnElementParams p, const float* a, float* out) {
    nn_affine(p, a, out);
}

extern "C" __global__ void nn_affine_f16(const NnElementParams p, const __half* a, __half* out) {
    nn_affine(p, a, out);
}

// Nearest ×2: out[pl, y, x] = a[pl, y/2, x/2] over [planes, 2h, 2w]. In f16
// each value is widened and rounded back, which changes no number.
template <typename T>
__device__ __forceinline__ void nn_upsample2x(const NnElementParams& p, const T* a, T* out) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        const unsigned int x = i % (2u * p.w);
        const unsigned int y = i / (2u * p.w) % (2u * p.h);
        const unsigned int pl = i / (4u * p.h * p.w);
        store_elem(out, i, load_elem(a, (pl * p.h + y / 2u) * p.w + x / 2u));
    }
}

extern "C" __global__ void nn_upsample2x_f32(const NnElementParams p, const float* a, float* out) {
    nn_upsample2x(p, a, out);
}

extern "C" __global__ void nn_upsample2x_f16(const NnElementParams p, const __half* a, __half* out) {
    nn_upsample2x(p, a, out);
}

// out[b, c_offset + ch, i] = a[b, ch, i]: one part of a channel concatenation.
template <typename T>
__device__ __forceinline__ void nn_concat(const NnElementParams& p, const T* a, T* out) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        const unsigned int b = i / (p.c * p.hw);
        const unsigned int ch = i / p.hw % p.c;
        store_elem(out, (b * p.c_total + p.c_offset + ch) * p.hw + i % p.hw, load_elem(a, i));
    }
}

extern "C" __global__ void nn_concat_f32(const NnElementParams p, const float* a, float* out) {
    nn_concat(p, a, out);
}

extern "C" __global__ void nn_concat_f16(const NnElementParams p, const __half* a, __half* out) {
    nn_concat(p, a, out);
}

// The sinusoidal embedding of t[batch] → [batch, dim], in the definition's f32
// steps: f_j = exp(−ln(10⁴)·j / shift), then sin / cos of t·f_j (an odd dim
// ends in 0). The timesteps are f32 whatever the output's storage.
template <typename T>
__device__ __forceinline__ void nn_time_proj(const NnElementParams& p, const float* t, T* out) {
    // ln(10⁴) rounded to f32, as the definition rounds it.
    const float ln_1e4 = static_cast<float>(9.210340371976184);
    const unsigned int half = p.dim / 2u;
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        const unsigned int j = i % p.dim;
        float v = 0.0f;
        if (j < 2u * half) {
            const float freq = expf((-ln_1e4 * static_cast<float>(j % half)) / p.shift);
            const float arg = t[i / p.dim] * freq;
            v = (j < half) == (p.flip_sin_to_cos != 0u) ? cosf(arg) : sinf(arg);
        }
        store_elem(out, i, v);
    }
}

extern "C" __global__ void nn_time_proj_f32(const NnElementParams p, const float* t, float* out) {
    nn_time_proj(p, t, out);
}

extern "C" __global__ void nn_time_proj_f16(const NnElementParams p, const float* t, __half* out) {
    nn_time_proj(p, t, out);
}

// out[pl, i] = a[pl, i] + bias[pl]: one value per plane (e.g. a resnet's
// projected time embedding, per item and channel).
template <typename T>
__device__ __forceinline__ void nn_add_bias(const NnElementParams& p, const T* a, const T* bias, T* out) {
    for (unsigned int i = grid_start(); i < p.n; i += grid_step()) {
        store_elem(out, i, load_elem(a, i) + load_elem(bias, i / p.hw));
    }
}

extern "C" __global__ void nn_add_bias_f32(const NnElementParams p, const float* a, const float* bias, float* out) {
    nn_add_bias(p, a, bias, out);
}

extern "C" __global__ void nn_add_bias_f16(const NnElementParams p, const __half* a, const __half* bias,
                                           __half* out) {
    nn_add_bias(p, a, bias, out);
}
