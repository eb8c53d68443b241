// The fused solver step (src/solver/step.rs documents the update; src/backend/cpu
// is its definition). This file is the f32 variant as written and valid on its
// own; the f16 variants are assembled from it in src/backend/wgpu/variants.rs:
//   - native f16: `enable f16;` prepended and the Elem alias line set to f16;
//   - packed f16: everything above the ENTRY POINT marker, plus solver_packed.wgsl,
//     which stores two halves per u32 for adapters without SHADER_F16.
// Storage is Elem; all math is f32, in the CPU reference's order.

alias Elem = f32;

// Mirrors SolverStepParams (src/backend/params.rs), 96 bytes.
struct Params {
    n: u32,
    stride: u32,
    d_slot: u32,
    h1: u32,
    h2: u32,
    xc_slot: u32,
    corr_mode: u32,
    step: u32,
    seed_lo: u32,
    seed_hi: u32,
    cx: f32,
    ce: f32,
    a: f32,
    b0: f32,
    b1: f32,
    b2: f32,
    ac: f32,
    c0: f32,
    c1: f32,
    c2: f32,
    noise: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const NO_SLOT: u32 = 0xffffffffu;
const CORR_OFF: u32 = 0u;
const CORR_FROM_SLOT: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;

override WORKGROUP_SIZE: u32 = 256u;

// 32×32 → 64-bit product as (hi, lo); WGSL has no 64-bit integers.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

// Philox4x32-10 of counter (index, step, 0, 0) under key (seed_lo, seed_hi);
// only the first two output words are used (src/rng.rs).
fn philox2(index: u32) -> vec2<u32> {
    var c = vec4<u32>(index, p.step, 0u, 0u);
    var k = vec2<u32>(p.seed_lo, p.seed_hi);
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let m0 = mulhilo(0xD2511F53u, c.x);
        let m1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(m1.x ^ c.y ^ k.x, m1.y, m0.x ^ c.w ^ k.y, m0.y);
    }
    return c.xy;
}

// Standard normal for (seed, step, index): Box–Muller on two 24-bit uniforms.
fn normal(index: u32) -> f32 {
    let r = philox2(index);
    let u1 = f32((r.x >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = f32(r.y >> 8u) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.2831855 * u2);
}

// The update of one element: (x', D, x^c). Absent history reads as 0, like the
// CPU reference.
fn fused(x: f32, m: f32, h1: f32, h2: f32, xc_prev: f32, index: u32) -> vec3<f32> {
    let d = p.cx * x - p.ce * m;
    var base = x;
    var xc = 0.0;
    if (p.corr_mode != CORR_OFF) {
        var prev = x;
        if (p.corr_mode == CORR_FROM_SLOT) {
            prev = xc_prev;
        }
        xc = p.ac * prev + p.c0 * d + p.c1 * h1 + p.c2 * h2;
        base = xc;
    }
    var out = p.a * base + p.b0 * d + p.b1 * h1 + p.b2 * h2;
    if (p.noise != 0.0) {
        out = out + p.noise * normal(index);
    }
    return vec3<f32>(out, d, xc);
}

// ---- ENTRY POINT (element-wise storage) ----

@group(0) @binding(1) var<storage, read_write> xs: array<Elem>;
@group(0) @binding(2) var<storage, read> ms: array<Elem>;
@group(0) @binding(3) var<storage, read_write> state: array<Elem>;

fn slot_value(slot: u32, i: u32) -> f32 {
    if (slot == NO_SLOT) {
        return 0.0;
    }
    return f32(state[slot * p.stride + i]);
}

// Grid-stride over elements: at most 65,535 workgroups are dispatched.
@compute @workgroup_size(WORKGROUP_SIZE)
fn solver_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    for (var i = gid.x; i < p.n; i += total) {
        var xc_prev = 0.0;
        if (p.corr_mode == CORR_FROM_SLOT) {
            xc_prev = f32(state[p.xc_slot * p.stride + i]);
        }
        let o = fused(f32(xs[i]), f32(ms[i]), slot_value(p.h1, i), slot_value(p.h2, i), xc_prev, i);
        if (p.d_slot != NO_SLOT) {
            state[p.d_slot * p.stride + i] = Elem(o.y);
        }
        if (p.corr_mode != CORR_OFF) {
            state[p.xc_slot * p.stride + i] = Elem(o.z);
        }
        xs[i] = Elem(o.x);
    }
}
