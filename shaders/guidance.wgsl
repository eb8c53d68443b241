// The guidance family (docs/math.md §6.4; src/backend/cpu/guidance.rs is the
// definition): the fused passes of noiseless C-ΠGDM. Network tensors (x, ε, g,
// H⁺y, m) are Elem; the conjugate state (u, v) is f32. P of ε, z or g is the
// operator's Project program evaluated inline — the same program as
// shaders/operator.wgsl (WGSL has no includes: keep the two in step; the
// parity tests compare both with the CPU definition). This file is the f32
// variant as written; the f16 variants are assembled like the operator's.

alias Elem = f32;

// Mirrors CpgdmParams (src/backend/params.rs), 144 bytes: the operator's
// params, then the pass.
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
    use_g: u32,
    use_z: u32,
    pad5: u32,
    c0: f32,
    c1: f32,
    c2: f32,
    c3: f32,
    c4: f32,
    c5: f32,
    c6: f32,
    c7: f32,
    c8: f32,
    c9: f32,
    c10: f32,
    c11: f32,
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
const NONE: u32 = 0xffffffffu;

const PASS_INIT: u32 = 0u;
const PASS_RESIDUAL: u32 = 1u;
const PASS_UPDATE: u32 = 2u;
// Which input P reads.
const FROM_EPS: u32 = 0u;
const FROM_G: u32 = 1u;
// The noise z of an update, in the m buffer.
const FROM_M: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> us: array<f32>;
@group(0) @binding(2) var<storage, read_write> vs: array<f32>;
@group(0) @binding(8) var<storage, read> table: array<u32>;

override WORKGROUP_SIZE: u32 = 256u;

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

// The operator's program at output element o, reading `which` (the Project
// programs only: MASK, POOL_PROJECT, COLOR_PROJECT).
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

// Element o of the pass: updates u and v where the pass does, and returns the
// network-facing value it writes (x, or m for the residual pass).
fn run_element(o: u32) -> f32 {
    if (p.stage == PASS_INIT) {
        let z = load_src(FROM_EPS, o);
        let pz = project(FROM_EPS, o);
        us[o] = p.c0 * load_hy(o) + p.c1 * pz;
        vs[o] = p.c2 * (z - pz);
        return p.c3 * load_hy(o) + p.c4 * z + p.c5 * pz;
    }
    if (p.stage == PASS_RESIDUAL) {
        let pe = project(FROM_EPS, o);
        return load_hy(o) - p.c0 * us[o] + p.c1 * pe;
    }
    let e = load_src(FROM_EPS, o);
    let pe = project(FROM_EPS, o);
    var un = p.c0 * us[o] + p.c1 * load_hy(o) + p.c2 * pe;
    var vn = p.c8 * vs[o] + p.c4 * (e - pe);
    if (p.use_g != 0u) {
        let pg = project(FROM_G, o);
        un = un + p.c3 * pg;
        vn = vn + p.c5 * (load_src(FROM_G, o) - pg);
    }
    if (p.use_z != 0u) {
        let z = load_src(FROM_M, o);
        let pz = project(FROM_M, o);
        un = un + p.c9 * pz;
        vn = vn + p.c9 * (z - pz);
    }
    us[o] = un;
    vs[o] = vn;
    return p.c6 * vn + p.c7 * un;
}

// ---- ENTRY POINT (element-wise storage) ----

@group(0) @binding(3) var<storage, read_write> xs: array<Elem>;
@group(0) @binding(4) var<storage, read_write> ms: array<Elem>;
@group(0) @binding(5) var<storage, read> eps: array<Elem>;
@group(0) @binding(6) var<storage, read> gs: array<Elem>;
@group(0) @binding(7) var<storage, read> hys: array<Elem>;

fn load_src(which: u32, i: u32) -> f32 {
    if (which == FROM_G) {
        return f32(gs[i]);
    }
    if (which == FROM_M) {
        return f32(ms[i]);
    }
    return f32(eps[i]);
}

fn load_hy(i: u32) -> f32 {
    return f32(hys[i]);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cpgdm_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    for (var o = gid.x; o < p.n_out; o += total) {
        let value = run_element(o);
        if (p.stage == PASS_RESIDUAL) {
            ms[o] = Elem(value);
        } else {
            xs[o] = Elem(value);
        }
    }
}
