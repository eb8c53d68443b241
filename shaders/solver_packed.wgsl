// Packed-f16 entry point of the fused solver step: appended to the part of
// solver.wgsl above its ENTRY POINT marker (not valid on its own). Two halves
// per u32 via unpack2x16float/pack2x16float, one invocation per pair, so no two
// invocations ever write the same word. Buffers are allocated rounded up to 4
// bytes and slot strides are multiples of 64 elements, so a pair never straddles
// two tensors; when n is odd the last pair's high half is padding, which is
// kept bit for bit, so packed and element-wise storage leave identical buffers.

@group(0) @binding(1) var<storage, read_write> xs: array<u32>;
@group(0) @binding(2) var<storage, read> ms: array<u32>;
@group(0) @binding(3) var<storage, read_write> state: array<u32>;

fn slot_pair(slot: u32, q: u32) -> vec2<f32> {
    if (slot == NO_SLOT) {
        return vec2<f32>(0.0);
    }
    return unpack2x16float(state[(slot * p.stride) / 2u + q]);
}

// The word to store for pair q: both halves, or only the low one when the high
// half is padding past element n − 1.
fn merged(q: u32, v: vec2<f32>, old: u32) -> u32 {
    let word = pack2x16float(v);
    if (2u * q + 1u < p.n) {
        return word;
    }
    return (word & 0xffffu) | (old & 0xffff0000u);
}

fn store_slot_pair(slot: u32, q: u32, v: vec2<f32>) {
    let w = (slot * p.stride) / 2u + q;
    state[w] = merged(q, v, state[w]);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn solver_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let total = groups.x * WORKGROUP_SIZE;
    let pairs = (p.n + 1u) / 2u;
    for (var q = gid.x; q < pairs; q += total) {
        let x = unpack2x16float(xs[q]);
        let m = unpack2x16float(ms[q]);
        let h1 = slot_pair(p.h1, q);
        let h2 = slot_pair(p.h2, q);
        var xc_prev = vec2<f32>(0.0);
        if (p.corr_mode == CORR_FROM_SLOT) {
            xc_prev = slot_pair(p.xc_slot, q);
        }
        let lo = fused(x.x, m.x, h1.x, h2.x, xc_prev.x, 2u * q);
        let hi = fused(x.y, m.y, h1.y, h2.y, xc_prev.y, 2u * q + 1u);
        if (p.d_slot != NO_SLOT) {
            store_slot_pair(p.d_slot, q, vec2<f32>(lo.y, hi.y));
        }
        if (p.corr_mode != CORR_OFF) {
            store_slot_pair(p.xc_slot, q, vec2<f32>(lo.z, hi.z));
        }
        xs[q] = merged(q, vec2<f32>(lo.x, hi.x), xs[q]);
    }
}
