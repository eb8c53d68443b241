// The fft family (docs/math.md §10; src/backend/cpu/fft.rs is the definition):
// batches of centred orthonormal 1-D DFTs along lines, and the complex
// element-wise products of the MRI operators. Complex data are interleaved
// (re, im) f32 pairs.
//
// fft_lines: one block per line (grid-stride over lines). The line is loaded
// into shared memory with the inverse shift, transformed by a Stockham
// autosort FFT — radix-5 stages first, then radix-2, ping-ponging between two
// halves of shared memory — and stored scaled by 1/√n with the forward shift.
// Any blockDim works: threads stride over each stage's butterflies.
//
// fft_centre: the glue of the CUDA backend's cuFFT path (docs/math.md §10.2).
// cuFFT computes the plain DFT of the unshifted planes; one gather per output
// element turns it into the centred orthonormal transform.
#include "common.cuh"

// Mirrors FftLineParams (src/backend/params.rs): 11 × u32, 1 × f32.
struct FftLineParams {
    unsigned int n;
    unsigned int lines;
    unsigned int stride;
    unsigned int inner;
    unsigned int inner_step;
    unsigned int group_step;
    unsigned int fives;
    unsigned int twos;
    unsigned int inverse;
    unsigned int twiddle_offset;
    unsigned int pad;
    float scale;
};
static_assert(sizeof(FftLineParams) == 48, "FftLineParams must match src/backend/params.rs");

// Mirrors FftPointwiseParams (src/backend/params.rs): 4 × u32.
struct FftPointwiseParams {
    unsigned int n_out;
    unsigned int program;
    unsigned int plane;
    unsigned int coils;
};
static_assert(sizeof(FftPointwiseParams) == 16, "FftPointwiseParams must match src/backend/params.rs");

// Mirrors FftCentreParams (src/backend/params.rs): 7 × u32, 1 × f32.
struct FftCentreParams {
    unsigned int n_out;
    unsigned int height;
    unsigned int width;
    unsigned int inverse;
    unsigned int width_twiddles;
    unsigned int height_twiddles;
    unsigned int pad;
    float scale;
};
static_assert(sizeof(FftCentreParams) == 32, "FftCentreParams must match src/backend/params.rs");

// MAX_DEVICE_LEN in src/ops/fft.rs.
#define FFT_MAX_LEN 1024u

#define FFT_MASK 0u
#define FFT_COIL_EXPAND 1u
#define FFT_COIL_COMBINE 2u
#define FFT_TO_INTERLEAVED 3u
#define FFT_TO_PLANAR 4u

struct cpx {
    float re, im;
};

__device__ __forceinline__ cpx cmul(cpx a, cpx b) {
    return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
__device__ __forceinline__ cpx cadd(cpx a, cpx b) { return {a.re + b.re, a.im + b.im}; }
__device__ __forceinline__ cpx csub(cpx a, cpx b) { return {a.re - b.re, a.im - b.im}; }
// σ·i·z for σ = ±1.
__device__ __forceinline__ cpx cisign(cpx z, float sigma) { return {-sigma * z.im, sigma * z.re}; }

// cos and sin of 2π/5 and 4π/5, rounded to f32.
#define FFT_C1 0.309016994374947424f
#define FFT_C2 -0.809016994374947424f
#define FFT_S1 0.951056516295153572f
#define FFT_S2 0.587785252292473129f

// The 5-point DFT with kernel e^{σ·2πi/5} (σ = −1 forward, +1 inverse).
__device__ __forceinline__ void dft5(cpx v[5], float sigma) {
    const cpx a1 = cadd(v[1], v[4]), b1 = csub(v[1], v[4]);
    const cpx a2 = cadd(v[2], v[3]), b2 = csub(v[2], v[3]);
    const cpx m1 = {v[0].re + FFT_C1 * a1.re + FFT_C2 * a2.re, v[0].im + FFT_C1 * a1.im + FFT_C2 * a2.im};
    const cpx m2 = {v[0].re + FFT_C2 * a1.re + FFT_C1 * a2.re, v[0].im + FFT_C2 * a1.im + FFT_C1 * a2.im};
    const cpx t1 = cisign({FFT_S1 * b1.re + FFT_S2 * b2.re, FFT_S1 * b1.im + FFT_S2 * b2.im}, sigma);
    const cpx t2 = cisign({FFT_S2 * b1.re - FFT_S1 * b2.re, FFT_S2 * b1.im - FFT_S1 * b2.im}, sigma);
    v[0] = cadd(v[0], cadd(a1, a2));
    v[1] = cadd(m1, t1);
    v[4] = csub(m1, t1);
    v[2] = cadd(m2, t2);
    v[3] = csub(m2, t2);
}

// One Stockham stage of radix R over the line in src (n elements), written to
// dst; ns is the length of the sub-transforms already done.
template <unsigned int R>
__device__ __forceinline__ void stage(const cpx* src, cpx* dst, unsigned int n, unsigned int ns,
                                      const cpx* tw, float sigma) {
    const unsigned int m = n / R, step = n / (ns * R);
    for (unsigned int j = threadIdx.x; j < m; j += blockDim.x) {
        const unsigned int k = j % ns;
        cpx v[R];
        for (unsigned int r = 0; r < R; ++r) {
            v[r] = src[j + r * m];
            if (r > 0) {
                // tw holds e^{−2πi t/n}; the inverse uses its conjugate.
                const cpx w = tw[k * r * step];
                v[r] = cmul(v[r], {w.re, -sigma * w.im});
            }
        }
        if constexpr (R == 5) {
            dft5(v, sigma);
        } else {
            const cpx a = v[0];
            v[0] = cadd(a, v[1]);
            v[1] = csub(a, v[1]);
        }
        const unsigned int out = (j / ns) * ns * R + k;
        for (unsigned int r = 0; r < R; ++r) {
            dst[out + r * ns] = v[r];
        }
    }
}

__device__ void fft_lines(const FftLineParams& p, const cpx* in, cpx* out, const cpx* twiddles) {
    __shared__ cpx buf[2 * FFT_MAX_LEN];
    const unsigned int n = p.n, half = n / 2;
    const float sigma = p.inverse ? 1.0f : -1.0f;
    const cpx* tw = twiddles + p.twiddle_offset;
    for (unsigned int line = blockIdx.x; line < p.lines; line += gridDim.x) {
        const unsigned int base = (line / p.inner) * p.group_step + (line % p.inner) * p.inner_step;
        for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
            buf[i] = in[base + (i + half) % n * p.stride];
        }
        __syncthreads();
        cpx* src = buf;
        cpx* dst = buf + FFT_MAX_LEN;
        unsigned int ns = 1;
        for (unsigned int s = 0; s < p.fives + p.twos; ++s) {
            if (s < p.fives) {
                stage<5>(src, dst, n, ns, tw, sigma);
                ns *= 5;
            } else {
                stage<2>(src, dst, n, ns, tw, sigma);
                ns *= 2;
            }
            __syncthreads();
            cpx* t = src;
            src = dst;
            dst = t;
        }
        for (unsigned int k = threadIdx.x; k < n; k += blockDim.x) {
            const cpx v = src[(k + n - half) % n];
            out[base + k * p.stride] = {p.scale * v.re, p.scale * v.im};
        }
        // The next line reloads buf.
        __syncthreads();
    }
}

__device__ void fft_pointwise(const FftPointwiseParams& p, const cpx* in, cpx* out, const float* aux) {
    const cpx* maps = reinterpret_cast<const cpx*>(aux);
    // The planar layouts [B, 2, H, W] as reals.
    const float* in_planar = reinterpret_cast<const float*>(in);
    float* out_planar = reinterpret_cast<float*>(out);
    for (unsigned int o = grid_start(); o < p.n_out; o += grid_step()) {
        const unsigned int px = o % p.plane;
        const unsigned int re_at = 2u * (o - px) + px;
        if (p.program == FFT_TO_PLANAR) {
            out_planar[re_at] = in[o].re;
            out_planar[re_at + p.plane] = in[o].im;
            continue;
        }
        cpx v;
        if (p.program == FFT_MASK) {
            v = {aux[px] * in[o].re, aux[px] * in[o].im};
        } else if (p.program == FFT_COIL_EXPAND) {
            const unsigned int b = o / (p.coils * p.plane), c = o / p.plane % p.coils;
            v = cmul(maps[c * p.plane + px], in[b * p.plane + px]);
        } else if (p.program == FFT_TO_INTERLEAVED) {
            v = {in_planar[re_at], in_planar[re_at + p.plane]};
        } else {
            const unsigned int b = o / p.plane;
            v = {0.0f, 0.0f};
            for (unsigned int c = 0; c < p.coils; ++c) {
                const cpx s = maps[c * p.plane + px];
                const cpx x = in[(b * p.coils + c) * p.plane + px];
                // conj(s)·x, as the CPU reference writes it.
                v = {v.re + (s.re * x.re + s.im * x.im), v.im + (s.re * x.im - s.im * x.re)};
            }
        }
        out[o] = v;
    }
}

// The factor ω^{−h·k} (ω = e^{σ·2πi/n}, h = ⌊n/2⌋) by which the ifftshift of
// a line's input multiplies its plain DFT at frequency k. tw holds e^{−2πit/n};
// the reduction h·k mod n keeps the table index exact.
__device__ __forceinline__ cpx centre_phase(const cpx* tw, unsigned int n, unsigned int k, float sigma) {
    const cpx w = tw[(n / 2) * k % n];
    return {w.re, sigma * w.im};
}

// out = scale · fftshift(phase ⊙ X) per plane, X the plain 2-D DFT in `in`:
// output (i, j) reads X at the fftshift source (i + H − ⌊H/2⌋) mod H (same for
// j), times the row and column phases of that source. in and out are distinct.
__device__ void fft_centre(const FftCentreParams& p, const cpx* in, cpx* out, const cpx* twiddles) {
    const float sigma = p.inverse ? 1.0f : -1.0f;
    const unsigned int h = p.height, w = p.width, plane = h * w;
    for (unsigned int o = grid_start(); o < p.n_out; o += grid_step()) {
        const unsigned int px = o % plane, i = px / w, j = px % w;
        const unsigned int si = (i + h - h / 2) % h, sj = (j + w - w / 2) % w;
        const cpx phase = cmul(centre_phase(twiddles + p.height_twiddles, h, si, sigma),
                               centre_phase(twiddles + p.width_twiddles, w, sj, sigma));
        const cpx v = cmul(phase, in[o - px + si * w + sj]);
        out[o] = {p.scale * v.re, p.scale * v.im};
    }
}

extern "C" __global__ void fft_lines_f32(const FftLineParams p, const float* in, float* out,
                                         const float* twiddles) {
    fft_lines(p, reinterpret_cast<const cpx*>(in), reinterpret_cast<cpx*>(out),
              reinterpret_cast<const cpx*>(twiddles));
}

extern "C" __global__ void fft_pointwise_f32(const FftPointwiseParams p, const float* in, float* out,
                                             const float* aux) {
    fft_pointwise(p, reinterpret_cast<const cpx*>(in), reinterpret_cast<cpx*>(out), aux);
}

extern "C" __global__ void fft_centre_f32(const FftCentreParams p, const float* in, float* out,
                                          const float* twiddles) {
    fft_centre(p, reinterpret_cast<const cpx*>(in), reinterpret_cast<cpx*>(out),
               reinterpret_cast<const cpx*>(twiddles));
}
