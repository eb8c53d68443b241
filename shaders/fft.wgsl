// The fft family (docs/math.md §10; src/backend/cpu/fft.rs is the definition):
// batches of centred orthonormal 1-D DFTs along lines, and the complex
// element-wise products of the MRI operators. f32 only: complex data are
// interleaved (re, im) f32 pairs, and an FFT in f16 storage would lose the
// dynamic range k-space needs (its DC term is √(HW) times the mean).
//
// fft_lines: one workgroup per line (grid-stride over lines). The line is
// loaded into workgroup memory with the inverse shift, transformed by a
// Stockham autosort FFT — radix-5 stages first, then radix-2, ping-ponging
// between the two halves of `buf` — and stored scaled by 1/√n with the forward
// shift. The same algorithm as kernels/fft.cu.

// Mirrors FftLineParams (src/backend/params.rs), 48 bytes.
struct LineParams {
    n: u32,
    lines: u32,
    stride: u32,
    inner: u32,
    inner_step: u32,
    group_step: u32,
    fives: u32,
    twos: u32,
    inverse: u32,
    twiddle_offset: u32,
    pad: u32,
    scale: f32,
}

// Mirrors FftPointwiseParams (src/backend/params.rs), 16 bytes.
struct PointwiseParams {
    n_out: u32,
    program: u32,
    plane: u32,
    coils: u32,
}

const MASK: u32 = 0u;
const COIL_EXPAND: u32 = 1u;
const TO_INTERLEAVED: u32 = 3u;
const TO_PLANAR: u32 = 4u;

// MAX_DEVICE_LEN in src/ops/fft.rs: two lines of it fill 16 KiB, WebGPU's
// guaranteed workgroup memory.
const MAX_LEN: u32 = 1024u;

// cos and sin of 2π/5 and 4π/5.
const C1: f32 = 0.309016994374947424;
const C2: f32 = -0.809016994374947424;
const S1: f32 = 0.951056516295153572;
const S2: f32 = 0.587785252292473129;

// Each entry point reads only its own params block at binding 0.
@group(0) @binding(0) var<uniform> lp: LineParams;
@group(0) @binding(0) var<uniform> pp: PointwiseParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// The twiddles e^{−2πik/n} (fft_lines), or the mask / coil maps (fft_pointwise).
@group(0) @binding(3) var<storage, read> aux: array<f32>;

override WORKGROUP_SIZE: u32 = 256u;

var<workgroup> buf: array<vec2<f32>, 2048>;

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// σ·i·z for σ = ±1.
fn isign(z: vec2<f32>, sigma: f32) -> vec2<f32> {
    return vec2<f32>(-sigma * z.y, sigma * z.x);
}

fn complex_at(i: u32) -> vec2<f32> {
    return vec2<f32>(src[2u * i], src[2u * i + 1u]);
}

fn maps_at(i: u32) -> vec2<f32> {
    return vec2<f32>(aux[2u * i], aux[2u * i + 1u]);
}

// One Stockham stage of `radix` (2 or 5) from buf[src_off..] to buf[dst_off..]; ns is
// the length of the sub-transforms already done.
fn stage(radix: u32, src_off: u32, dst_off: u32, ns: u32, lane: u32, sigma: f32) {
    let n = lp.n;
    let m = n / radix;
    let step = n / (ns * radix);
    for (var j = lane; j < m; j += WORKGROUP_SIZE) {
        let k = j % ns;
        var v: array<vec2<f32>, 5>;
        for (var r = 0u; r < radix; r++) {
            var x = buf[src_off + j + r * m];
            if (r > 0u) {
                // aux holds e^{−2πi t/n}; the inverse uses its conjugate.
                let t = lp.twiddle_offset + k * r * step;
                x = cmul(x, vec2<f32>(aux[2u * t], -sigma * aux[2u * t + 1u]));
            }
            v[r] = x;
        }
        if (radix == 5u) {
            let a1 = v[1] + v[4];
            let b1 = v[1] - v[4];
            let a2 = v[2] + v[3];
            let b2 = v[2] - v[3];
            let m1 = v[0] + C1 * a1 + C2 * a2;
            let m2 = v[0] + C2 * a1 + C1 * a2;
            let t1 = isign(S1 * b1 + S2 * b2, sigma);
            let t2 = isign(S2 * b1 - S1 * b2, sigma);
            v[0] = v[0] + (a1 + a2);
            v[1] = m1 + t1;
            v[4] = m1 - t1;
            v[2] = m2 + t2;
            v[3] = m2 - t2;
        } else {
            let a = v[0];
            v[0] = a + v[1];
            v[1] = a - v[1];
        }
        let out = (j / ns) * ns * radix + k;
        for (var r = 0u; r < radix; r++) {
            buf[dst_off + out + r * ns] = v[r];
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn fft_lines(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = lp.n;
    let half = n / 2u;
    let sigma = select(-1.0, 1.0, lp.inverse != 0u);
    for (var line = wid.x; line < lp.lines; line += nwg.x) {
        let base = (line / lp.inner) * lp.group_step + (line % lp.inner) * lp.inner_step;
        for (var i = lane; i < n; i += WORKGROUP_SIZE) {
            buf[i] = complex_at(base + (i + half) % n * lp.stride);
        }
        workgroupBarrier();
        var src_off = 0u;
        var dst_off = MAX_LEN;
        var ns = 1u;
        for (var s = 0u; s < lp.fives + lp.twos; s++) {
            let radix = select(2u, 5u, s < lp.fives);
            stage(radix, src_off, dst_off, ns, lane, sigma);
            workgroupBarrier();
            let t = src_off;
            src_off = dst_off;
            dst_off = t;
            ns *= radix;
        }
        for (var k = lane; k < n; k += WORKGROUP_SIZE) {
            let v = buf[src_off + (k + n - half) % n];
            let at = base + k * lp.stride;
            dst[2u * at] = lp.scale * v.x;
            dst[2u * at + 1u] = lp.scale * v.y;
        }
        // The next line reloads buf.
        workgroupBarrier();
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn fft_pointwise(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var o = gid.x; o < pp.n_out; o += nwg.x * WORKGROUP_SIZE) {
        let px = o % pp.plane;
        // Where the real part of complex element o lives in a planar [B, 2, H, W].
        let re_at = 2u * (o - px) + px;
        if (pp.program == TO_PLANAR) {
            dst[re_at] = src[2u * o];
            dst[re_at + pp.plane] = src[2u * o + 1u];
            continue;
        }
        var v: vec2<f32>;
        if (pp.program == MASK) {
            v = aux[px] * complex_at(o);
        } else if (pp.program == COIL_EXPAND) {
            let b = o / (pp.coils * pp.plane);
            let c = o / pp.plane % pp.coils;
            v = cmul(maps_at(c * pp.plane + px), complex_at(b * pp.plane + px));
        } else if (pp.program == TO_INTERLEAVED) {
            v = vec2<f32>(src[re_at], src[re_at + pp.plane]);
        } else {
            let b = o / pp.plane;
            v = vec2<f32>(0.0, 0.0);
            for (var c = 0u; c < pp.coils; c++) {
                let s = maps_at(c * pp.plane + px);
                let x = complex_at((b * pp.coils + c) * pp.plane + px);
                // conj(s)·x, as the CPU reference writes it.
                v = v + vec2<f32>(s.x * x.x + s.y * x.y, s.x * x.y - s.y * x.x);
            }
        }
        dst[2u * o] = v.x;
        dst[2u * o + 1u] = v.y;
    }
}
