// Packed-f16 entry point of the DDS passes: appended to the part of dds.wgsl
// above its ENTRY POINT marker (not valid on its own). Network tensors are
// read a half at a time from their u32 words; each invocation runs one pair
// of elements and writes their whole xt word, so no two invocations share a
// word. When n is odd the last word's high half is padding, kept bit for bit.

@group(0) @binding(2) var<storage, read_write> xts: array<u32>;
@group(0) @binding(3) var<storage, read> eps: array<u32>;
@group(0) @binding(4) var<storage, read> zs: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn dds_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    let n = p.item * p.batch;
    let pairs = (n + 1u) / 2u;
    for (var q = gid.x; q < pairs; q += total) {
        let o = 2u * q;
        let two = o + 1u < n;
        let xt = unpack2x16float(xts[q]);
        let e = unpack2x16float(eps[q]);
        if (p.stage == TWEEDIE) {
            tweedie(o, xt.x, e.x);
            if (two) {
                tweedie(o + 1u, xt.y, e.y);
            }
        } else {
            let z = unpack2x16float(zs[q]);
            let lo = renoise(o, z.x, e.x);
            if (two) {
                xts[q] = pack2x16float(vec2<f32>(lo, renoise(o + 1u, z.y, e.y)));
            } else {
                xts[q] = (pack2x16float(vec2<f32>(lo, 0.0)) & 0xffffu) | (xts[q] & 0xffff0000u);
            }
        }
    }
}
