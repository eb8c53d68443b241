// The operator family (docs/math.md §5; src/backend/cpu/operator.rs is the
// definition): one dispatch computes every output element of H, Hᵀ, H⁺ or P
// of an inpainting, average-pooling or colorization operator, each on its own.
// This file is the f32 variant as written and valid on its own; the f16
// variants are assembled from it (src/backend/wgpu/variants.rs): native f16
// sets the Elem alias, packed f16 replaces the entry point with
// operator_packed.wgsl. Storage is Elem; all math is f32, sums left to right.

alias Elem = f32;

// Mirrors OperatorParams (src/backend/params.rs), 80 bytes.
struct Params {
    n_out: u32,
    out_item: u32,
    in_item: u32,
    program: u32,
    channels: u32,
    height: u32,
    width: u32,
    factor: u32,
    rank_offset: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
    scale: f32,
    h0: f32,
    h1: f32,
    h2: f32,
    g0: f32,
    g1: f32,
    g2: f32,
    pad3: f32,
}

const GATHER: u32 = 0u;
const SCATTER: u32 = 1u;
const MASK: u32 = 2u;
const POOL_MEAN: u32 = 3u;
const POOL_SPREAD: u32 = 4u;
const POOL_PROJECT: u32 = 5u;
const COLOR_DOT: u32 = 6u;
const COLOR_SPREAD: u32 = 7u;
const COLOR_PROJECT: u32 = 8u;
const SEP_ROWS: u32 = 9u;
const SEP_COLS: u32 = 10u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> table: array<u32>;

override WORKGROUP_SIZE: u32 = 256u;

// Σ over the factor×factor block with top-left (row, col) of channel c of the
// input item at `base`: rows, then columns.
fn block_sum(base: u32, c: u32, row: u32, col: u32) -> f32 {
    let plane = p.height * p.width;
    var acc = 0.0;
    for (var a = 0u; a < p.factor; a++) {
        for (var b = 0u; b < p.factor; b++) {
            acc = acc + load_in(base + c * plane + (row + a) * p.width + col + b);
        }
    }
    return acc;
}

fn grey(base: u32, px: u32) -> f32 {
    let plane = p.height * p.width;
    return p.h0 * load_in(base + px) + p.h1 * load_in(base + plane + px) + p.h2 * load_in(base + 2u * plane + px);
}

fn spread_weight(c: u32) -> f32 {
    if (c == 0u) {
        return p.g0;
    }
    if (c == 1u) {
        return p.g1;
    }
    return p.g2;
}

// Output element o.
fn value(o: u32) -> f32 {
    let r = o % p.out_item;
    let base = (o / p.out_item) * p.in_item;
    let s = p.factor;
    let plane = p.height * p.width;
    if (p.program == GATHER) {
        return load_in(base + table[r]);
    }
    if (p.program == SCATTER) {
        let t = table[p.rank_offset + r];
        if (t == NONE) {
            return 0.0;
        }
        return load_in(base + t);
    }
    if (p.program == MASK) {
        if (table[p.rank_offset + r] == NONE) {
            return 0.0;
        }
        return load_in(base + r);
    }
    if (p.program == SEP_ROWS) {
        // [C, height, width] → [C, height, factor]; M (factor × width, f32 bits) at rank_offset.
        let c = r / (p.height * s);
        let a = (r / s) % p.height;
        let m = p.rank_offset + (r % s) * p.width;
        let row = base + c * plane + a * p.width;
        var acc = 0.0;
        for (var b = 0u; b < p.width; b++) {
            acc = acc + load_in(row + b) * bitcast<f32>(table[m + b]);
        }
        return acc;
    }
    if (p.program == SEP_COLS) {
        // [C, height, width] → [C, factor, width]; M (factor × height) at rank_offset.
        let c = r / (s * p.width);
        let m = p.rank_offset + ((r / p.width) % s) * p.height;
        let col = base + c * plane + r % p.width;
        var acc = 0.0;
        for (var a = 0u; a < p.height; a++) {
            acc = acc + bitcast<f32>(table[m + a]) * load_in(col + a * p.width);
        }
        return acc;
    }
    if (p.program == POOL_MEAN) {
        let rows = p.height / s;
        let cols = p.width / s;
        let c = r / (rows * cols);
        let i = (r / cols) % rows;
        let j = r % cols;
        return p.scale * block_sum(base, c, s * i, s * j);
    }
    let c = r / plane;
    let i = (r / p.width) % p.height;
    let j = r % p.width;
    if (p.program == POOL_SPREAD) {
        let rows = p.height / s;
        let cols = p.width / s;
        return p.scale * load_in(base + c * rows * cols + (i / s) * cols + j / s);
    }
    if (p.program == POOL_PROJECT) {
        return p.scale * block_sum(base, c, i / s * s, j / s * s);
    }
    if (p.program == COLOR_DOT) {
        return grey(base, r);
    }
    if (p.program == COLOR_SPREAD) {
        return spread_weight(c) * load_in(base + r % plane);
    }
    if (p.program == COLOR_PROJECT) {
        return spread_weight(c) * grey(base, r % plane);
    }
    return 0.0;
}

// ---- ENTRY POINT (element-wise storage) ----

@group(0) @binding(1) var<storage, read> src: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dst: array<Elem>;

fn load_in(i: u32) -> f32 {
    return f32(src[i]);
}

// Grid-stride over output elements: at most 65,535 workgroups are dispatched.
@compute @workgroup_size(WORKGROUP_SIZE)
fn operator_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    for (var o = gid.x; o < p.n_out; o += total) {
        dst[o] = Elem(value(o));
    }
}
