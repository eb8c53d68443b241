// The Krylov family (docs/math.md §9; src/backend/cpu/krylov.rs is the
// definition): the conjugate-gradient passes with their reductions on the
// device, and the two element-wise DDS passes around them.
//
// A CG pass runs on a grid of (chunks, batch) blocks: block (g, b) owns
// elements g·1024 … g·1024 + 1023 of sample b and writes one partial sum of
// them. A sample's scalars (⟨r, r⟩, ⟨p, q⟩) are its partials re-summed by
// every block of the next pass, in the same fixed order, so α and β never
// leave the device and agree bit for bit across blocks. Sums are folded over
// 256 virtual lanes whatever blockDim is (lane_sum, common.cuh), so the
// rounding is the CPU's at every block size; the module is compiled with
// --fmad=false.
#include "common.cuh"

#include "operator.cuh"

#define CG_CHUNK 1024u

#define CG_RESIDUAL 0u
#define CG_DIRECTION 1u
#define CG_UPDATE 2u
#define CG_DOT 3u

#define DDS_TWEEDIE 0u
#define DDS_RENOISE 1u

// G v at element o: AᵀA v from t, or P v from the operator's Project program.
__device__ __forceinline__ float gram_at(const CgParams& p, const float* v, const float* t, const unsigned int* table,
                                         unsigned int o) {
    if (p.gram_from_t != 0u) {
        return t[o];
    }
    const unsigned int b = o / p.item;
    return operator_value(p.op, v + b * p.item, table, o % p.item);
}

extern "C" __global__ void cg_pass_f32(const CgParams p, float* x, float* r, float* pv, float* q, float* partials,
                                       unsigned int* iterations, const float* d, const float* t,
                                       const unsigned int* table) {
    __shared__ float lanes[DIFFINV_LANES];
    const unsigned int g = blockIdx.x, b = blockIdx.y, k = p.iteration;
    const unsigned int base = b * p.item + g * CG_CHUNK;
    const unsigned int len = min(CG_CHUNK, p.item - g * CG_CHUNK);
    // The sum in `slot` (0, 1: ⟨r, r⟩ ping-pong; 2: ⟨p, q⟩; 3: ⟨b, b⟩) of this sample.
    auto slot_sum = [&](unsigned int slot) {
        const float* part = partials + (slot * p.batch + b) * p.chunks;
        return lane_sum(lanes, p.chunks, [&](unsigned int i) { return part[i]; });
    };
    float total = 0.0f;
    float rhs_total = 0.0f;
    unsigned int out_slot = 0u;
    bool counted = false;
    if (p.pass == CG_RESIDUAL) {
        total = lane_sum(lanes, len, [&](unsigned int i) {
            const unsigned int o = base + i;
            const float rhs = p.rhs_x * x[o] + p.rhs_d * d[o];
            const float kx = p.identity * x[o] + p.gram * gram_at(p, x, t, table, o);
            r[o] = rhs - kx;
            return r[o] * r[o];
        });
        rhs_total = lane_sum(lanes, len, [&](unsigned int i) {
            const unsigned int o = base + i;
            const float rhs = p.rhs_x * x[o] + p.rhs_d * d[o];
            return rhs * rhs;
        });
    } else if (p.pass == CG_DIRECTION) {
        float beta = 0.0f;
        if (k > 0u) {
            const float old = slot_sum((k + 1u) % 2u);
            const float rr = slot_sum(k % 2u);
            beta = old != 0.0f ? rr / old : 0.0f;
        }
        total = lane_sum(lanes, len, [&](unsigned int i) {
            const unsigned int o = base + i;
            const float kr = p.identity * r[o] + p.gram * gram_at(p, r, t, table, o);
            if (k == 0u) {
                pv[o] = r[o];
                q[o] = kr;
            } else {
                pv[o] = r[o] + beta * pv[o];
                q[o] = kr + beta * q[o];
            }
            return pv[o] * q[o];
        });
        out_slot = 2u;
    } else if (p.pass == CG_UPDATE) {
        const float rr = slot_sum(k % 2u);
        const float pq = slot_sum(2u);
        // Summed before the test, not inside it: slot_sum synchronises the
        // block, so every thread must reach it whatever the tolerance says.
        const float bb = slot_sum(3u);
        // The tolerance, or the stall rule: a residual down to the rounding
        // of b leaves p rounding noise, and α noise over noise.
        const bool stopped = (k >= 1u && p.tolerance2 >= 0.0f && rr < p.tolerance2) || rr <= p.stall2 * bb;
        counted = !stopped && pq != 0.0f;
        const float alpha = counted ? rr / pq : 0.0f;
        total = lane_sum(lanes, len, [&](unsigned int i) {
            const unsigned int o = base + i;
            if (counted) {
                x[o] = x[o] + alpha * pv[o];
                r[o] = r[o] - alpha * q[o];
            }
            return r[o] * r[o];
        });
        out_slot = (k + 1u) % 2u;
    } else if (p.pass == CG_DOT) {
        total = lane_sum(lanes, len, [&](unsigned int i) { return d[base + i] * t[base + i]; });
        out_slot = 2u;
    }
    if (threadIdx.x == 0u) {
        partials[(out_slot * p.batch + b) * p.chunks + g] = total;
        if (p.pass == CG_RESIDUAL) {
            partials[(3u * p.batch + b) * p.chunks + g] = rhs_total;
        }
        if (g == 0u && p.pass == CG_RESIDUAL) {
            iterations[b] = 0u;
        }
        if (g == 0u && counted) {
            iterations[b] += 1u;
        }
    }
}

template <typename T>
__device__ __forceinline__ void dds_tweedie(const CgParams& p, const T* xt, const T* eps, float* x0) {
    const unsigned int n = p.item * p.batch;
    for (unsigned int o = grid_start(); o < n; o += grid_step()) {
        x0[o] = (load_elem(xt, o) - p.c[1] * load_elem(eps, o)) / p.c[0];
    }
}

template <typename T>
__device__ __forceinline__ void dds_renoise(const CgParams& p, const float* x0, const T* eps, const T* z, T* xt) {
    const unsigned int n = p.item * p.batch;
    for (unsigned int o = grid_start(); o < n; o += grid_step()) {
        store_elem(xt, o, p.c[0] * x0[o] + p.c[1] * load_elem(z, o) + p.c[2] * load_elem(eps, o));
    }
}

extern "C" __global__ void dds_tweedie_f32(const CgParams p, const float* xt, const float* eps, float* x0) {
    dds_tweedie(p, xt, eps, x0);
}

extern "C" __global__ void dds_tweedie_f16(const CgParams p, const __half* xt, const __half* eps, float* x0) {
    dds_tweedie(p, xt, eps, x0);
}

extern "C" __global__ void dds_renoise_f32(const CgParams p, const float* x0, const float* eps, const float* z,
                                           float* xt) {
    dds_renoise(p, x0, eps, z, xt);
}

extern "C" __global__ void dds_renoise_f16(const CgParams p, const float* x0, const __half* eps, const __half* z,
                                           __half* xt) {
    dds_renoise(p, x0, eps, z, xt);
}
