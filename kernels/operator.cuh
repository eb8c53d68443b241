// The operator family's per-element programs (docs/math.md §5), shared by
// every kernel that applies an operator: operator.cu, and guidance.cu, which
// projects inside its fused passes. Include after common.cuh.
#pragma once

#define OP_GATHER 0u
#define OP_SCATTER 1u
#define OP_MASK 2u
#define OP_POOL_MEAN 3u
#define OP_POOL_SPREAD 4u
#define OP_POOL_PROJECT 5u
#define OP_COLOR_DOT 6u
#define OP_COLOR_SPREAD 7u
#define OP_COLOR_PROJECT 8u
#define OP_SEP_ROWS 9u
#define OP_SEP_COLS 10u
#define OP_NONE 0xffffffffu

// Σ over the factor×factor block with top-left (row, col) of channel c: rows, then columns.
template <typename T>
__device__ __forceinline__ float block_sum(const OperatorParams& p, const T* x, unsigned int c, unsigned int row,
                                           unsigned int col) {
    const unsigned int plane = p.height * p.width;
    float acc = 0.0f;
    for (unsigned int a = 0; a < p.factor; ++a) {
        for (unsigned int b = 0; b < p.factor; ++b) {
            acc += load_elem(x, c * plane + (row + a) * p.width + col + b);
        }
    }
    return acc;
}

template <typename T>
__device__ __forceinline__ float grey(const OperatorParams& p, const T* x, unsigned int px) {
    const unsigned int plane = p.height * p.width;
    return p.h[0] * load_elem(x, px) + p.h[1] * load_elem(x, plane + px) + p.h[2] * load_elem(x, 2u * plane + px);
}

// Output element o; x is the input's batch item.
template <typename T>
__device__ __forceinline__ float operator_value(const OperatorParams& p, const T* x, const unsigned int* table,
                                                unsigned int r) {
    const unsigned int s = p.factor, plane = p.height * p.width;
    switch (p.program) {
        case OP_GATHER:
            return load_elem(x, table[r]);
        case OP_SCATTER: {
            const unsigned int t = table[p.rank_offset + r];
            return t == OP_NONE ? 0.0f : load_elem(x, t);
        }
        case OP_MASK:
            return table[p.rank_offset + r] == OP_NONE ? 0.0f : load_elem(x, r);
        case OP_POOL_MEAN: {
            const unsigned int rows = p.height / s, cols = p.width / s;
            const unsigned int c = r / (rows * cols), i = (r / cols) % rows, j = r % cols;
            return p.scale * block_sum(p, x, c, s * i, s * j);
        }
        case OP_POOL_SPREAD: {
            const unsigned int rows = p.height / s, cols = p.width / s;
            const unsigned int c = r / plane, i = (r / p.width) % p.height, j = r % p.width;
            return p.scale * load_elem(x, c * rows * cols + (i / s) * cols + j / s);
        }
        case OP_POOL_PROJECT: {
            const unsigned int c = r / plane, i = (r / p.width) % p.height, j = r % p.width;
            return p.scale * block_sum(p, x, c, i / s * s, j / s * s);
        }
        case OP_COLOR_DOT:
            return grey(p, x, r);
        case OP_COLOR_SPREAD:
            return p.g[r / plane] * load_elem(x, r % plane);
        case OP_COLOR_PROJECT:
            return p.g[r / plane] * grey(p, x, r % plane);
        case OP_SEP_ROWS: {
            // x [C, height, width] → [C, height, factor]; M (factor × width, f32 bits) at rank_offset.
            const unsigned int c = r / (p.height * s), a = (r / s) % p.height, j = r % s;
            const unsigned int* m = table + p.rank_offset + j * p.width;
            float acc = 0.0f;
            for (unsigned int b = 0; b < p.width; ++b) {
                acc += load_elem(x, c * plane + a * p.width + b) * __uint_as_float(m[b]);
            }
            return acc;
        }
        case OP_SEP_COLS: {
            // x [C, height, width] → [C, factor, width]; M (factor × height) at rank_offset.
            const unsigned int c = r / (s * p.width), i = (r / p.width) % s, j = r % p.width;
            const unsigned int* m = table + p.rank_offset + i * p.height;
            float acc = 0.0f;
            for (unsigned int a = 0; a < p.height; ++a) {
                acc += __uint_as_float(m[a]) * load_elem(x, c * plane + a * p.width + j);
            }
            return acc;
        }
        default:
            return 0.0f;
    }
}
