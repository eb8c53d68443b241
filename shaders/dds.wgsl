// The element-wise DDS passes of the Krylov family (docs/math.md §9.3;
// src/backend/cpu/krylov.rs is the definition): Tweedie's x̂0 from the
// network input and ε into the f32 CG state, and the re-noised next network
// input from it. Network tensors are Elem; this file is the f32 variant as
// written, the f16 variants are assembled like the operator's.

alias Elem = f32;

// Mirrors CgParams (src/backend/params.rs), 144 bytes; the DDS passes read
// the pass, the sizes and c0..c2.
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
    pad4: u32,
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

const TWEEDIE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x0s: array<f32>;

override WORKGROUP_SIZE: u32 = 256u;

fn tweedie(o: u32, xt: f32, e: f32) {
    x0s[o] = (xt - p.c1 * e) / p.c0;
}

fn renoise(o: u32, z: f32, e: f32) -> f32 {
    return p.c0 * x0s[o] + p.c1 * z + p.c2 * e;
}

// ---- ENTRY POINT (element-wise storage) ----

@group(0) @binding(2) var<storage, read_write> xts: array<Elem>;
@group(0) @binding(3) var<storage, read> eps: array<Elem>;
@group(0) @binding(4) var<storage, read> zs: array<Elem>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn dds_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    let n = p.item * p.batch;
    for (var o = gid.x; o < n; o += total) {
        if (p.stage == TWEEDIE) {
            tweedie(o, f32(xts[o]), f32(eps[o]));
        } else {
            xts[o] = Elem(renoise(o, f32(zs[o]), f32(eps[o])));
        }
    }
}
