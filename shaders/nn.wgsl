// The nn family: the layers of a UNet forward (src/ops/nn.rs documents each
// op; src/backend/cpu/nn.rs is the definition). Storage is Elem, math is f32:
// this file is the f32 variant as written; the native-f16 variant is assembled
// from it (src/backend/wgpu/variants.rs: `enable f16;` and the alias set to
// f16). Values are widened on load (`ld0`…) and rounded once on store (`st`).
// There is no packed-f16 variant: an adapter without SHADER_F16 runs the
// family in f32 only.
//
// Every entry has the same bindings (three read-only inputs, one output, one
// f32 side input) so one layout serves the family; an op binds what it does
// not read to one of its inputs. Parameters are 16 words at a dynamic offset
// of the uniform arena (word i means something per op, mirrored by `NnParams`
// in src/backend/wgpu/nn.rs); f32 parameters travel as their bit patterns.
//
// The GEMM-shaped entries (conv2d, matmul) compute one 16×16 output tile per
// workgroup from 16×16 tiles of both operands staged in workgroup memory, so
// an operand element is read from storage once per tile rather than once per
// output. Tiles stride over the dispatched grid, so any size runs within the
// 65,535-workgroups-per-dimension limit.

struct Params {
    w: array<vec4<u32>, 4>,
}

alias Elem = f32;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> in0: array<Elem>;
@group(0) @binding(2) var<storage, read> in1: array<Elem>;
@group(0) @binding(3) var<storage, read> in2: array<Elem>;
@group(0) @binding(4) var<storage, read_write> out: array<Elem>;
// f32 whatever the storage: the timesteps of time_proj (diffusers keeps them
// in full precision; f16 would round 741.25 to 741.0). Other ops bind in0 here.
@group(0) @binding(5) var<storage, read> side: array<f32>;

fn ld0(i: u32) -> f32 {
    return f32(in0[i]);
}

fn ld1(i: u32) -> f32 {
    return f32(in1[i]);
}

fn ld2(i: u32) -> f32 {
    return f32(in2[i]);
}

fn ldo(i: u32) -> f32 {
    return f32(out[i]);
}

fn st(i: u32, v: f32) {
    out[i] = Elem(v);
}

// Element-wise and reduction entries run WORKGROUP_SIZE invocations (1..=256);
// the reductions pad missing lanes, so any size is correct.
override WORKGROUP_SIZE: u32 = 256u;

const TILE: u32 = 16u;

var<workgroup> tile_a: array<array<f32, 16>, 16>;
var<workgroup> tile_b: array<array<f32, 16>, 16>;
var<workgroup> red: array<f32, 256>;

fn word(i: u32) -> u32 {
    return params.w[i / 4u][i % 4u];
}

fn wordf(i: u32) -> f32 {
    return bitcast<f32>(word(i));
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// ---- conv2d: out[b, co, oy, ox] = bias[co] + Σ w[co, ci, ky, kx] · x[b, ci, oy·s−p+ky, ox·s−p+kx]
// in0 x, in1 w [cout, cin·k·k], in2 bias.
// words: 0 batch, 1 cin, 2 h, 3 w, 4 cout, 5 ho, 6 wo, 7 k, 8 stride, 9 pad, 10 has_bias

// Element (kk, col) of the implicit im2col matrix, 0 in the padding.
fn conv_patch(kk: u32, col: u32) -> f32 {
    let cin = word(1u);
    let h = word(2u);
    let w = word(3u);
    let ho = word(5u);
    let wo = word(6u);
    let k = word(7u);
    let stride = word(8u);
    let pad = i32(word(9u));
    if (kk >= cin * k * k || col >= word(0u) * ho * wo) {
        return 0.0;
    }
    let ci = kk / (k * k);
    let r = kk % (k * k);
    let b = col / (ho * wo);
    let p = col % (ho * wo);
    let iy = i32((p / wo) * stride + r / k) - pad;
    let ix = i32((p % wo) * stride + r % k) - pad;
    if (iy < 0 || ix < 0 || iy >= i32(h) || ix >= i32(w)) {
        return 0.0;
    }
    return ld0(((b * cin + ci) * h + u32(iy)) * w + u32(ix));
}

@compute @workgroup_size(16, 16)
fn nn_conv2d(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let cout = word(4u);
    let hwo = word(5u) * word(6u);
    let k = word(7u);
    let kk_total = word(1u) * k * k;
    let n_total = word(0u) * hwo;
    let tiles_n = (n_total + TILE - 1u) / TILE;
    let tiles_m = (cout + TILE - 1u) / TILE;
    for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
        for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
            let row = tm * TILE + lid.y;
            let col = tn * TILE + lid.x;
            var acc = 0.0;
            for (var k0 = 0u; k0 < kk_total; k0 += TILE) {
                let ka = k0 + lid.x;
                var a = 0.0;
                if (row < cout && ka < kk_total) {
                    a = ld1(row * kk_total + ka);
                }
                tile_a[lid.y][lid.x] = a;
                tile_b[lid.y][lid.x] = conv_patch(k0 + lid.y, col);
                workgroupBarrier();
                for (var i = 0u; i < TILE; i++) {
                    acc += tile_a[lid.y][i] * tile_b[i][lid.x];
                }
                workgroupBarrier();
            }
            if (row < cout && col < n_total) {
                if (word(10u) != 0u) {
                    acc += ld2(row);
                }
                st(((col / hwo) * cout + row) * hwo + col % hwo, acc);
            }
        }
    }
}

// ---- matmul: out[z, m, n] = α Σ_k A[z, m, k] B[z, k, n] + bias[n] (+ out[z, m, n] when accumulating)
// in0 A (stored [z, k, m] when trans_a), in1 B (stored [z, n, k] when trans_b), in2 bias.
// words: 0 batch, 1 m, 2 n, 3 k, 4 trans_a, 5 trans_b, 6 alpha (f32 bits), 7 has_bias, 8 accumulate

fn mm_a(z: u32, r: u32, c: u32) -> f32 {
    let m = word(1u);
    let k = word(3u);
    if (r >= m || c >= k) {
        return 0.0;
    }
    if (word(4u) != 0u) {
        return ld0(z * m * k + c * m + r);
    }
    return ld0(z * m * k + r * k + c);
}

fn mm_b(z: u32, r: u32, c: u32) -> f32 {
    let n = word(2u);
    let k = word(3u);
    if (r >= k || c >= n) {
        return 0.0;
    }
    if (word(5u) != 0u) {
        return ld1(z * n * k + c * k + r);
    }
    return ld1(z * n * k + r * n + c);
}

@compute @workgroup_size(16, 16)
fn nn_matmul(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let batch = word(0u);
    let m = word(1u);
    let n = word(2u);
    let k = word(3u);
    let tiles_n = (n + TILE - 1u) / TILE;
    let tiles_m = (m + TILE - 1u) / TILE;
    for (var z = wid.z; z < batch; z += nwg.z) {
        for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
                let row = tm * TILE + lid.y;
                let col = tn * TILE + lid.x;
                var acc = 0.0;
                for (var k0 = 0u; k0 < k; k0 += TILE) {
                    tile_a[lid.y][lid.x] = mm_a(z, row, k0 + lid.x);
                    tile_b[lid.y][lid.x] = mm_b(z, k0 + lid.y, col);
                    workgroupBarrier();
                    for (var i = 0u; i < TILE; i++) {
                        acc += tile_a[lid.y][i] * tile_b[i][lid.x];
                    }
                    workgroupBarrier();
                }
                if (row < m && col < n) {
                    var v = wordf(6u) * acc;
                    if (word(7u) != 0u) {
                        v += ld2(col);
                    }
                    let o = (z * m + row) * n + col;
                    if (word(8u) != 0u) {
                        v += ldo(o);
                    }
                    st(o, v);
                }
            }
        }
    }
}

// Sum over the workgroup's lanes; slots no lane owns hold 0, so the tree
// below is correct for any WORKGROUP_SIZE ≤ 256.
fn workgroup_sum(lane: u32, v: f32) -> f32 {
    for (var i = lane; i < 256u; i += WORKGROUP_SIZE) {
        red[i] = select(0.0, v, i == lane);
    }
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lane] += red[lane + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// Max over the workgroup's lanes; slots no lane owns repeat the lane's value.
fn workgroup_max(lane: u32, v: f32) -> f32 {
    for (var i = lane; i < 256u; i += WORKGROUP_SIZE) {
        red[i] = v;
    }
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lane] = max(red[lane], red[lane + s]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// ---- group_norm: per (item, group) over cg channels × hw pixels, then γ, β and optionally SiLU.
// in0 x, in1 gamma, in2 beta. One workgroup per (item, group).
// words: 0 batch, 1 channels, 2 hw, 3 groups, 4 eps (f32 bits), 5 silu

@compute @workgroup_size(WORKGROUP_SIZE)
fn nn_group_norm(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = word(1u);
    let hw = word(2u);
    let groups = word(3u);
    let cg = c / groups;
    let count = cg * hw;
    for (var item = wid.x; item < word(0u) * groups; item += nwg.x) {
        let base = ((item / groups) * c + (item % groups) * cg) * hw;
        var s = 0.0;
        for (var i = lane; i < count; i += WORKGROUP_SIZE) {
            s += ld0(base + i);
        }
        let mean = workgroup_sum(lane, s) / f32(count);
        // Two passes (mean, then squared deviations) keep the variance
        // non-negative and accurate in f32 without a compensated sum.
        var s2 = 0.0;
        for (var i = lane; i < count; i += WORKGROUP_SIZE) {
            let d = ld0(base + i) - mean;
            s2 += d * d;
        }
        let rstd = inverseSqrt(workgroup_sum(lane, s2) / f32(count) + wordf(4u));
        for (var i = lane; i < count; i += WORKGROUP_SIZE) {
            let ch = (item % groups) * cg + i / hw;
            var v = (ld0(base + i) - mean) * rstd * ld1(ch) + ld2(ch);
            if (word(5u) != 0u) {
                v = silu(v);
            }
            st(base + i, v);
        }
    }
}

// ---- softmax: out row r = softmax(scale · in0 row r), rows of `cols`. One workgroup per row.
// words: 0 rows, 1 cols, 2 scale (f32 bits)

@compute @workgroup_size(WORKGROUP_SIZE)
fn nn_softmax(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let cols = word(1u);
    let scale = wordf(2u);
    for (var r = wid.x; r < word(0u); r += nwg.x) {
        let base = r * cols;
        var mx = -3.4028235e38;
        for (var i = lane; i < cols; i += WORKGROUP_SIZE) {
            mx = max(mx, scale * ld0(base + i));
        }
        mx = workgroup_max(lane, mx);
        var s = 0.0;
        for (var i = lane; i < cols; i += WORKGROUP_SIZE) {
            s += exp(scale * ld0(base + i) - mx);
        }
        let inv = 1.0 / workgroup_sum(lane, s);
        for (var i = lane; i < cols; i += WORKGROUP_SIZE) {
            st(base + i, exp(scale * ld0(base + i) - mx) * inv);
        }
    }
}

// ---- elementwise: one output element per invocation, grid-stride. in0 a, in1 b.
// words: 0 op, 1 n (elements iterated), then per op:
//   0 add        out = a + b
//   1 silu       out = silu(a)
//   2 upsample   2 h, 3 w: out[p, y, x] = a[p, y/2, x/2] over [planes, 2h, 2w]
//   3 concat     2 c, 3 hw, 4 c_total, 5 c_offset: out[b, c_offset + ch, i] = a[b, ch, i]
//   4 time_proj  2 dim, 3 shift (f32 bits: dim/2 − freq_shift), 4 flip_sin_to_cos; t[batch] from `side`
//   5 add_bias   2 hw: out[bc, i] = a[bc, i] + b[bc] (a per-item, per-channel bias, e.g. a
//                resnet's time-embedding projection)

fn time_proj(i: u32) -> f32 {
    let dim = word(2u);
    let hd = dim / 2u;
    let j = i % dim;
    if (j >= 2u * hd) {
        return 0.0;
    }
    // The definition's f32 steps: exp(−ln(10000)·j / shift), then t·freq.
    let freq = exp((-9.2103404 * f32(j % hd)) / wordf(3u));
    let arg = side[i / dim] * freq;
    if ((j < hd) == (word(4u) != 0u)) {
        return cos(arg);
    }
    return sin(arg);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn nn_elementwise(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let op = word(0u);
    let n = word(1u);
    for (var i = gid.x; i < n; i += nwg.x * WORKGROUP_SIZE) {
        switch op {
            case 0u: {
                st(i, ld0(i) + ld1(i));
            }
            case 1u: {
                st(i, silu(ld0(i)));
            }
            case 2u: {
                let h = word(2u);
                let w = word(3u);
                let x = i % (2u * w);
                let y = (i / (2u * w)) % (2u * h);
                let p = i / (4u * h * w);
                st(i, ld0((p * h + y / 2u) * w + x / 2u));
            }
            case 3u: {
                let c = word(2u);
                let hw = word(3u);
                let b = i / (c * hw);
                let ch = (i / hw) % c;
                st((b * word(4u) + word(5u) + ch) * hw + i % hw, ld0(i));
            }
            case 4u: {
                st(i, time_proj(i));
            }
            case 5u: {
                st(i, ld0(i) + ld1(i / word(2u)));
            }
            default: {
                // scale·a + shift, unfused like the CPU definition's rounding.
                let scaled = wordf(2u) * ld0(i);
                st(i, scaled + wordf(3u));
            }
        }
    }
}
