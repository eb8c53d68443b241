// The CG passes of the Krylov family (docs/math.md §9;
// src/backend/cpu/krylov.rs is the definition; kernels/krylov.cu the CUDA
// twin). Workgroup (g, b) owns elements g·1024 … g·1024 + 1023 of sample b
// and writes one partial sum of them; the next pass's workgroups each re-sum
// their sample's partials in the same fixed order, so α and β are computed on
// the device, identically everywhere. Sums fold over 256 virtual lanes
// whatever the workgroup size. The CG state is f32 in every variant.
//
// P is the operator's Project program evaluated inline — the same program as
// shaders/operator.wgsl and shaders/guidance.wgsl (WGSL has no includes: keep
// them in step; the parity tests compare all of them with the CPU definition).

// Mirrors CgParams (src/backend/params.rs), 144 bytes: the operator's params,
// then the pass.
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
    stage: u32,
    iteration: u32,
    item: u32,
    chunks: u32,
    batch: u32,
    gram_from_t: u32,
    stall2: f32,
    pad5: u32,
    identity: f32,
    gram: f32,
    rhs_x: f32,
    rhs_d: f32,
    tolerance2: f32,
    c0: f32,
    c1: f32,
    c2: f32,
}

const MASK: u32 = 2u;
const POOL_PROJECT: u32 = 5u;
const COLOR_PROJECT: u32 = 8u;
const NONE: u32 = 0xffffffffu;

const RESIDUAL: u32 = 0u;
const DIRECTION: u32 = 1u;
const UPDATE: u32 = 2u;
const DOT: u32 = 3u;

const LANES: u32 = 256u;
const CHUNK: u32 = 1024u;

// Which vector P reads.
const FROM_X: u32 = 0u;
const FROM_R: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> xs: array<f32>;
@group(0) @binding(2) var<storage, read_write> rs: array<f32>;
@group(0) @binding(3) var<storage, read_write> ps: array<f32>;
@group(0) @binding(4) var<storage, read_write> qs: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> iterations: array<u32>;
@group(0) @binding(7) var<storage, read> ds: array<f32>;
@group(0) @binding(8) var<storage, read> ts: array<f32>;
@group(0) @binding(9) var<storage, read> table: array<u32>;

override WORKGROUP_SIZE: u32 = 256u;

var<workgroup> lanes: array<f32, 256>;

fn load_src(which: u32, i: u32) -> f32 {
    if (which == FROM_X) {
        return xs[i];
    }
    return rs[i];
}

fn block_sum(which: u32, base: u32, c: u32, row: u32, col: u32) -> f32 {
    let plane = p.height * p.width;
    var acc = 0.0;
    for (var a = 0u; a < p.factor; a++) {
        for (var b = 0u; b < p.factor; b++) {
            acc = acc + load_src(which, base + c * plane + (row + a) * p.width + col + b);
        }
    }
    return acc;
}

fn grey(which: u32, base: u32, px: u32) -> f32 {
    let plane = p.height * p.width;
    return p.h0 * load_src(which, base + px) + p.h1 * load_src(which, base + plane + px)
        + p.h2 * load_src(which, base + 2u * plane + px);
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

// The operator's Project program at element o of `which`.
fn project(which: u32, o: u32) -> f32 {
    let r = o % p.out_item;
    let base = (o / p.out_item) * p.in_item;
    let s = p.factor;
    let plane = p.height * p.width;
    if (p.program == MASK) {
        if (table[p.rank_offset + r] == NONE) {
            return 0.0;
        }
        return load_src(which, base + r);
    }
    let c = r / plane;
    let i = (r / p.width) % p.height;
    let j = r % p.width;
    if (p.program == POOL_PROJECT) {
        return p.scale * block_sum(which, base, c, i / s * s, j / s * s);
    }
    if (p.program == COLOR_PROJECT) {
        return spread_weight(c) * grey(which, base, r % plane);
    }
    return 0.0;
}

// G v at element o: AᵀA v from t, or P v inline.
fn gram_at(which: u32, o: u32) -> f32 {
    if (p.gram_from_t != 0u) {
        return ts[o];
    }
    return project(which, o);
}

// Fold the lanes pairwise (lane i += lane i + s, s = 128 … 1) and return the
// total to every invocation.
fn fold_lanes(lid: u32) -> f32 {
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        for (var i = lid; i < s; i += WORKGROUP_SIZE) {
            lanes[i] = lanes[i] + lanes[i + s];
        }
    }
    workgroupBarrier();
    let total = lanes[0];
    workgroupBarrier();
    return total;
}

// This sample's sum in `slot` (0, 1: ⟨r, r⟩ ping-pong; 2: ⟨p, q⟩; 3: ⟨b, b⟩).
fn slot_sum(lid: u32, slot: u32, b: u32) -> f32 {
    let start = (slot * p.batch + b) * p.chunks;
    for (var l = lid; l < LANES; l += WORKGROUP_SIZE) {
        var acc = 0.0;
        for (var i = l; i < p.chunks; i += LANES) {
            acc = acc + partials[start + i];
        }
        lanes[l] = acc;
    }
    return fold_lanes(lid);
}

// Update element o as the pass does and return its term of the pass's sum.
fn element(o: u32, beta: f32, alpha: f32, counted: bool) -> f32 {
    if (p.stage == RESIDUAL) {
        let rhs = p.rhs_x * xs[o] + p.rhs_d * ds[o];
        let kx = p.identity * xs[o] + p.gram * gram_at(FROM_X, o);
        rs[o] = rhs - kx;
        return rs[o] * rs[o];
    }
    if (p.stage == DIRECTION) {
        let kr = p.identity * rs[o] + p.gram * gram_at(FROM_R, o);
        if (p.iteration == 0u) {
            ps[o] = rs[o];
            qs[o] = kr;
        } else {
            ps[o] = rs[o] + beta * ps[o];
            qs[o] = kr + beta * qs[o];
        }
        return ps[o] * qs[o];
    }
    if (p.stage == DOT) {
        return ds[o] * ts[o];
    }
    if (counted) {
        xs[o] = xs[o] + alpha * ps[o];
        rs[o] = rs[o] - alpha * qs[o];
    }
    return rs[o] * rs[o];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cg_pass(@builtin(local_invocation_id) local: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>) {
    let lid = local.x;
    let g = group.x;
    let b = group.y;
    let k = p.iteration;
    let base = b * p.item + g * CHUNK;
    let len = min(CHUNK, p.item - g * CHUNK);
    var beta = 0.0;
    var alpha = 0.0;
    var counted = false;
    var out_slot = 0u;
    if (p.stage == DIRECTION || p.stage == DOT) {
        out_slot = 2u;
        if (k > 0u) {
            let old = slot_sum(lid, (k + 1u) % 2u, b);
            let rr = slot_sum(lid, k % 2u, b);
            if (old != 0.0) {
                beta = rr / old;
            }
        }
    }
    if (p.stage == UPDATE) {
        out_slot = (k + 1u) % 2u;
        let rr = slot_sum(lid, k % 2u, b);
        let pq = slot_sum(lid, 2u, b);
        // The tolerance, or the stall rule: a residual down to the rounding
        // of b leaves p rounding noise, and α noise over noise.
        let bb = slot_sum(lid, 3u, b);
        let stopped = (k >= 1u && p.tolerance2 >= 0.0 && rr < p.tolerance2) || rr <= p.stall2 * bb;
        counted = !stopped && pq != 0.0;
        if (counted) {
            alpha = rr / pq;
        }
    }
    for (var l = lid; l < LANES; l += WORKGROUP_SIZE) {
        var acc = 0.0;
        for (var i = l; i < len; i += LANES) {
            acc = acc + element(base + i, beta, alpha, counted);
        }
        lanes[l] = acc;
    }
    let total = fold_lanes(lid);
    // ⟨b, b⟩ of the right-hand side, summed like ⟨r, r⟩, for the stall rule.
    var rhs_total = 0.0;
    if (p.stage == RESIDUAL) {
        for (var l = lid; l < LANES; l += WORKGROUP_SIZE) {
            var acc = 0.0;
            for (var i = l; i < len; i += LANES) {
                let rhs = p.rhs_x * xs[base + i] + p.rhs_d * ds[base + i];
                acc = acc + rhs * rhs;
            }
            lanes[l] = acc;
        }
        rhs_total = fold_lanes(lid);
    }
    if (lid == 0u) {
        partials[(out_slot * p.batch + b) * p.chunks + g] = total;
        if (p.stage == RESIDUAL) {
            partials[(3u * p.batch + b) * p.chunks + g] = rhs_total;
        }
        if (g == 0u && p.stage == RESIDUAL) {
            iterations[b] = 0u;
        }
        if (g == 0u && counted) {
            iterations[b] = iterations[b] + 1u;
        }
    }
}
