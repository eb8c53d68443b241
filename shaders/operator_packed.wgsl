// Packed-f16 entry point of the operator kernel: appended to the part of
// operator.wgsl above its ENTRY POINT marker (not valid on its own). Inputs are
// read a half at a time from their u32 words; each invocation computes one
// pair of output elements and writes their whole word, so no two invocations
// share a word. When n_out is odd the last word's high half is padding and is
// kept bit for bit.

@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn load_in(i: u32) -> f32 {
    return unpack2x16float(src[i >> 1u])[i & 1u];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn operator_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    let pairs = (p.n_out + 1u) / 2u;
    for (var q = gid.x; q < pairs; q += total) {
        let lo = value(2u * q);
        if (2u * q + 1u < p.n_out) {
            dst[q] = pack2x16float(vec2<f32>(lo, value(2u * q + 1u)));
        } else {
            dst[q] = (pack2x16float(vec2<f32>(lo, 0.0)) & 0xffffu) | (dst[q] & 0xffff0000u);
        }
    }
}
