// Packed-f16 entry point of the C-ΠGDM passes: appended to the part of
// guidance.wgsl above its ENTRY POINT marker (not valid on its own). Network
// tensors are read a half at a time from their u32 words; each invocation runs
// one pair of elements and writes their whole output word (the f32 state is
// per element), so no two invocations share a word. When n is odd the last
// word's high half is padding and is kept bit for bit.

@group(0) @binding(3) var<storage, read_write> xs: array<u32>;
@group(0) @binding(4) var<storage, read_write> ms: array<u32>;
@group(0) @binding(5) var<storage, read> eps: array<u32>;
@group(0) @binding(6) var<storage, read> gs: array<u32>;
@group(0) @binding(7) var<storage, read> hys: array<u32>;

fn load_src(which: u32, i: u32) -> f32 {
    if (which == FROM_G) {
        return unpack2x16float(gs[i >> 1u])[i & 1u];
    }
    if (which == FROM_M) {
        return unpack2x16float(ms[i >> 1u])[i & 1u];
    }
    return unpack2x16float(eps[i >> 1u])[i & 1u];
}

fn load_hy(i: u32) -> f32 {
    return unpack2x16float(hys[i >> 1u])[i & 1u];
}

// The word for pair q: both halves, or the low one and the old high half.
fn merged(q: u32, lo: f32, hi: f32, old: u32) -> u32 {
    let word = pack2x16float(vec2<f32>(lo, hi));
    if (2u * q + 1u < p.n_out) {
        return word;
    }
    return (word & 0xffffu) | (old & 0xffff0000u);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cpgdm_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    let pairs = (p.n_out + 1u) / 2u;
    for (var q = gid.x; q < pairs; q += total) {
        let lo = run_element(2u * q);
        var hi = 0.0;
        if (2u * q + 1u < p.n_out) {
            hi = run_element(2u * q + 1u);
        }
        if (p.stage == PASS_RESIDUAL) {
            ms[q] = merged(q, lo, hi, ms[q]);
        } else {
            xs[q] = merged(q, lo, hi, xs[q]);
        }
    }
}
