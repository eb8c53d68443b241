//! `#[repr(C)]` kernel parameter blocks shared by the CUDA and WGSL kernels.
//!
//! Each struct is mirrored field by field in `kernels/common.cuh` and in the
//! WGSL `Params` struct of the matching shader; sizes are asserted on both sides.

use bytemuck::{Pod, Zeroable};

use crate::solver::{CorrectorBase, SolverStep, StepLaunch};

/// Slot index meaning "absent" in a params block.
pub const NO_SLOT: u32 = u32::MAX;

/// Corrector modes in [`SolverStepParams::corr_mode`].
pub const CORR_OFF: u32 = 0;
pub const CORR_FROM_SLOT: u32 = 1;
pub const CORR_FROM_X: u32 = 2;

/// Parameters of `solver_step_{f16,f32}` (kernels/solver.cu, shaders/solver.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SolverStepParams {
    pub n: u32,
    pub stride: u32,
    pub d_slot: u32,
    pub h1: u32,
    pub h2: u32,
    pub xc_slot: u32,
    pub corr_mode: u32,
    pub step: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub cx: f32,
    pub ce: f32,
    pub a: f32,
    pub b0: f32,
    pub b1: f32,
    pub b2: f32,
    pub ac: f32,
    pub c0: f32,
    pub c1: f32,
    pub c2: f32,
    pub noise: f32,
    pub _pad: [u32; 3],
}

/// Byte size the kernels assert for [`SolverStepParams`].
pub const SOLVER_STEP_PARAMS_SIZE: usize = 96;
const _: () = assert!(std::mem::size_of::<SolverStepParams>() == SOLVER_STEP_PARAMS_SIZE);

impl SolverStepParams {
    /// Round the f64 plan scalars to the f32 the kernels compute with.
    ///
    /// Slots are resolved the way the CPU reference resolves them (it hands
    /// each state slot to one role, in the order d, xc, h1, h2): a slot already
    /// claimed by an earlier role is absent (reads 0, never written) for a later
    /// one, and a corrector without an xc slot is off. [`SolverStep::validate`]
    /// rejects such steps before a checked launch; this resolution keeps the
    /// unchecked `solver_step_raw` path memory-safe on every device backend: no
    /// two roles write the same element and no kernel indexes `NO_SLOT`.
    pub fn new(step: &SolverStep, launch: StepLaunch, n: u32, stride: u32) -> Self {
        let slot = |s: Option<u32>| s.unwrap_or(NO_SLOT);
        let (corr_mode, ac, c) = match step.corrector {
            None => (CORR_OFF, 0.0, [0.0; 3]),
            Some(c) => {
                let mode = match c.base {
                    CorrectorBase::Slot => CORR_FROM_SLOT,
                    CorrectorBase::X => CORR_FROM_X,
                };
                (mode, c.a, c.c)
            }
        };
        let mut p = SolverStepParams {
            n,
            stride,
            d_slot: slot(step.d_slot),
            h1: slot(step.h1),
            h2: slot(step.h2),
            xc_slot: slot(step.xc_slot),
            corr_mode,
            step: launch.step,
            seed_lo: launch.seed as u32,
            seed_hi: (launch.seed >> 32) as u32,
            cx: step.cx as f32,
            ce: step.ce as f32,
            a: step.a as f32,
            b0: step.b[0] as f32,
            b1: step.b[1] as f32,
            b2: step.b[2] as f32,
            ac: ac as f32,
            c0: c[0] as f32,
            c1: c[1] as f32,
            c2: c[2] as f32,
            noise: step.noise as f32,
            _pad: [0; 3],
        };
        let mut taken = [NO_SLOT; 4];
        let mut claim = |slot: u32, role: usize| {
            if slot == NO_SLOT || taken[..role].contains(&slot) {
                NO_SLOT
            } else {
                taken[role] = slot;
                slot
            }
        };
        p.d_slot = claim(p.d_slot, 0);
        p.xc_slot = claim(p.xc_slot, 1);
        p.h1 = claim(p.h1, 2);
        p.h2 = claim(p.h2, 3);
        if p.xc_slot == NO_SLOT {
            p.corr_mode = CORR_OFF;
        }
        p
    }
}

/// What one launch of the operator kernel computes for output element `o`
/// (`docs/math.md` §5; `b = o / out_item`, `r = o % out_item`).
pub mod program {
    /// `out[b, r] = in[b, table[r]]` (inpainting H, y = kept entries).
    pub const GATHER: u32 = 0;
    /// `out[b, r] = t ≠ NONE ? in[b, t] : 0`, `t = table[rank_offset + r]` (inpainting Hᵀ = H⁺).
    pub const SCATTER: u32 = 1;
    /// `out[b, r] = table[rank_offset + r] ≠ NONE ? in[b, r] : 0` (a mask: diag(m)).
    pub const MASK: u32 = 2;
    /// `out = scale · Σ` over the `factor × factor` block of output pixel `r` (average pool).
    pub const POOL_MEAN: u32 = 3;
    /// `out = scale · in[b, c, i / factor, j / factor]` (nearest upsampling).
    pub const POOL_SPREAD: u32 = 4;
    /// `out = scale · Σ` over the block containing pixel `r` (upsample ∘ pool).
    pub const POOL_PROJECT: u32 = 5;
    /// `out[b, p] = h0·in[b, 0, p] + h1·in[b, 1, p] + h2·in[b, 2, p]` (colour → grey).
    pub const COLOR_DOT: u32 = 6;
    /// `out[b, c, p] = g_c · in[b, p]`.
    pub const COLOR_SPREAD: u32 = 7;
    /// `out[b, c, p] = g_c · (h0·in[b, 0, p] + h1·in[b, 1, p] + h2·in[b, 2, p])`.
    pub const COLOR_PROJECT: u32 = 8;
    /// Separable operators, first pass (along rows): `out[c, a, j] = Σ_b in[c, a, b]·M[j, b]`
    /// with `in` `[C, height, width]`, `out` `[C, height, factor]` and M (`factor × width`,
    /// f32 bits) at `table[rank_offset..]`.
    pub const SEP_ROWS: u32 = 9;
    /// Separable operators, second pass (along columns): `out[c, i, j] = Σ_a M[i, a]·in[c, a, j]`
    /// with `in` `[C, height, width]`, `out` `[C, factor, width]` and M (`factor × height`)
    /// at `table[rank_offset..]`.
    pub const SEP_COLS: u32 = 10;
    /// An index-table entry meaning "not observed".
    pub const NONE: u32 = u32::MAX;
}

/// Parameters of `operator_apply_{f16,f32}` (kernels/operator.cu, shaders/operator.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct OperatorParams {
    /// Output elements in total (batch × out_item).
    pub n_out: u32,
    pub out_item: u32,
    pub in_item: u32,
    /// One of [`program`].
    pub program: u32,
    /// Image item `[channels, height, width]` of x.
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    /// Pooling factor (1 for other programs).
    pub factor: u32,
    /// Where the rank table starts in the index table.
    pub rank_offset: u32,
    pub _pad: [u32; 3],
    pub scale: f32,
    /// Colour weights h.
    pub h: [f32; 3],
    /// Colour spreading weights g (h for Hᵀ, h/‖h‖² for H⁺ and P).
    pub g: [f32; 3],
    pub _pad2: f32,
}

/// Byte size the kernels assert for [`OperatorParams`].
pub const OPERATOR_PARAMS_SIZE: usize = 80;
const _: () = assert!(std::mem::size_of::<OperatorParams>() == OPERATOR_PARAMS_SIZE);

/// What one launch of the C-ΠGDM kernel does (`docs/math.md` §6.4), with
/// `Pz`, `Pε`, `Pg` computed inline by the operator's Project program.
pub mod cpgdm_pass {
    /// From noise z (in the ε slot): `u = c0·hy + c1·Pz`, `v = c2·(z − Pz)`,
    /// `x = c3·hy + c4·z + c5·Pz`.
    pub const INIT: u32 = 0;
    /// Before the Jacobian product: `m = hy − c0·u + c1·Pε`.
    pub const RESIDUAL: u32 = 1;
    /// The step: `u ← c0·u + c1·hy + c2·Pε + c3·Pg`,
    /// `v ← c8·v + c4·(ε − Pε) + c5·(g − Pg)`, then with noise z (in the m
    /// buffer) `u += c9·Pz`, `v += c9·(z − Pz)`, and the next network input
    /// `x = c6·v + c7·u` (g terms only with a Jacobian product, z terms only
    /// with noise).
    pub const UPDATE: u32 = 2;
}

/// Parameters of `cpgdm_pass_{f16,f32}` (kernels/guidance.cu, shaders/guidance.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct CpgdmParams {
    /// The operator's Project program for one batch item (`n_out` = all elements).
    pub op: OperatorParams,
    /// One of [`cpgdm_pass`].
    pub pass: u32,
    /// 1 when the update has a Jacobian product g, else 0.
    pub use_g: u32,
    /// 1 when the update adds noise z (read from the m buffer), else 0.
    pub use_z: u32,
    pub _pad: u32,
    /// The pass's coefficients (meaning per [`cpgdm_pass`]; the rest 0).
    pub c: [f32; 12],
}

/// Byte size the kernels assert for [`CpgdmParams`].
pub const CPGDM_PARAMS_SIZE: usize = 144;
const _: () = assert!(std::mem::size_of::<CpgdmParams>() == CPGDM_PARAMS_SIZE);

/// Virtual lanes of one partial sum of the CG reductions: each kernel folds
/// its lanes' sums with the same fixed tree whatever its block size, so every
/// backend (and every block size) rounds a reduction the same way.
pub const CG_LANES: usize = 256;
/// Elements per partial sum: lane `l` of chunk `g` sums elements
/// `g·CG_CHUNK + l + CG_LANES·j`, j = 0, 1, 2, 3, in that order.
pub const CG_CHUNK: usize = 4 * CG_LANES;

/// What one launch of the CG kernel does (`docs/math.md` §9.2). `K·v` is
/// `identity·v + gram·G v`, where `G v` is `P v` computed inline by the
/// operator's Project program, or read from the `t` buffer (`gram_from_t`),
/// which the operator's own kernels filled with AᵀA v.
pub mod cg_pass {
    /// `r = rhs_x·x + rhs_d·d − K x`; ⟨r, r⟩ into rr slot 0, ⟨b, b⟩ of the
    /// right-hand side `b = rhs_x·x + rhs_d·d` into slot 3; iterations = 0.
    pub const RESIDUAL: u32 = 0;
    /// β = rr_k / rr_{k−1} (0 at k = 0 or when rr_{k−1} = 0), `p = r + β·p`,
    /// `q = K r + β·q` (= K p); ⟨p, q⟩ into the pq slot.
    pub const DIRECTION: u32 = 1;
    /// α = rr_k / ⟨p, q⟩ (0 when ⟨p, q⟩ = 0 or the sample has stopped: by
    /// the tolerance, or by the stall rule rr_k ≤ stall2·⟨b, b⟩),
    /// `x += α·p`, `r −= α·q`; ⟨r, r⟩ into rr slot (k + 1) mod 2.
    pub const UPDATE: u32 = 2;
    /// ⟨d, t⟩ into the pq slot, nothing else (the unfused baseline's dot).
    pub const DOT: u32 = 3;
}

/// What one launch of the DDS kernel does (`docs/math.md` §9.3): the network
/// tensors (xt, ε, z) are of the run's dtype, x is the CG state.
pub mod dds_pass {
    /// Tweedie: `x = (xt − c1·ε) / c0`.
    pub const TWEEDIE: u32 = 0;
    /// Re-noise: `xt = c0·x + c1·z + c2·ε`.
    pub const RENOISE: u32 = 1;
}

/// Parameters of `cg_pass_f32` and `dds_pass_{f16,f32}` (kernels/krylov.cu,
/// shaders/krylov.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct CgParams {
    /// The operator's Project program over the batch (item to item; unused
    /// with `gram_from_t` and by the DDS passes).
    pub op: OperatorParams,
    /// One of [`cg_pass`] or [`dds_pass`].
    pub pass: u32,
    /// The iteration k of a DIRECTION or UPDATE pass.
    pub iteration: u32,
    /// Elements per sample.
    pub item: u32,
    /// Partial sums per sample: ⌈item / [`CG_CHUNK`]⌉.
    pub chunks: u32,
    pub batch: u32,
    /// 1 when G v comes from the `t` buffer, 0 when P v is computed inline.
    pub gram_from_t: u32,
    /// A sample stops (α = 0) at every k once rr_k ≤ stall2·⟨b, b⟩: its
    /// residual is down to the rounding of the right-hand side, where p is
    /// rounding noise and α = rr/⟨p, q⟩ would be noise over noise — for a
    /// singular K (the normal equations) an arbitrarily large step.
    pub stall2: f32,
    pub _pad: u32,
    pub identity: f32,
    pub gram: f32,
    pub rhs_x: f32,
    pub rhs_d: f32,
    /// A sample stops (α = 0) at k ≥ 1 once rr_k < this; negative: never.
    pub tolerance2: f32,
    /// The DDS pass's coefficients.
    pub c: [f32; 3],
}

/// Byte size the kernels assert for [`CgParams`].
pub const CG_PARAMS_SIZE: usize = 144;
const _: () = assert!(std::mem::size_of::<CgParams>() == CG_PARAMS_SIZE);
/// Parameters of `fft_lines_f32` (kernels/fft.cu, shaders/fft.wgsl): one
/// centred orthonormal 1-D DFT per line, lines laid out as
/// `base(l) = (l / inner)·group_step + (l % inner)·inner_step` with elements
/// `stride` apart (all in complex elements). Radix-5 stages run first, then
/// radix-2 ones (`docs/math.md` §10).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct FftLineParams {
    /// Line length `n = 5^fives · 2^twos`.
    pub n: u32,
    pub lines: u32,
    pub stride: u32,
    /// Lines per group.
    pub inner: u32,
    pub inner_step: u32,
    pub group_step: u32,
    pub fives: u32,
    pub twos: u32,
    /// 0: the forward transform (e^{−2πi/n}); 1: the inverse.
    pub inverse: u32,
    /// Where this length's twiddles `e^{−2πik/n}`, `k < n`, start in the
    /// twiddle table (complex elements).
    pub twiddle_offset: u32,
    pub _pad: u32,
    /// `1/√n`: the orthonormal scaling.
    pub scale: f32,
}

/// Byte size the kernels assert for [`FftLineParams`].
pub const FFT_LINE_PARAMS_SIZE: usize = 48;
const _: () = assert!(std::mem::size_of::<FftLineParams>() == FFT_LINE_PARAMS_SIZE);

/// What one launch of `fft_pointwise_f32` computes for complex output element
/// `o` (`docs/math.md` §10; `p = o % plane`, complex products in the order
/// `(ar·br − ai·bi, ar·bi + ai·br)`).
pub mod fft_pointwise {
    /// `out[o] = m[p] · in[o]`, the sampling mask (one real per pixel of the plane).
    pub const MASK: u32 = 0;
    /// `out[b, c, p] = S[c, p] · in[b, p]`, coil images from an image.
    pub const COIL_EXPAND: u32 = 1;
    /// `out[b, p] = Σ_c conj(S[c, p]) · in[b, c, p]`, summed in coil order.
    pub const COIL_COMBINE: u32 = 2;
    /// `out[b, p] = (in[b, 0, p], in[b, 1, p])`: 2 real channels `[B, 2, H, W]`
    /// (a 2-channel network's image) to interleaved `[B, H, W, 2]`.
    pub const TO_INTERLEAVED: u32 = 3;
    /// `out[b, 0, p] = re in[b, p]`, `out[b, 1, p] = im in[b, p]`: the reverse.
    pub const TO_PLANAR: u32 = 4;
}

/// Parameters of `fft_pointwise_f32` (kernels/fft.cu, shaders/fft.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct FftPointwiseParams {
    /// Complex output elements in total.
    pub n_out: u32,
    /// One of [`fft_pointwise`].
    pub program: u32,
    /// Complex elements per image plane (H·W).
    pub plane: u32,
    pub coils: u32,
}

/// Byte size the kernels assert for [`FftPointwiseParams`].
pub const FFT_POINTWISE_PARAMS_SIZE: usize = 16;
const _: () = assert!(std::mem::size_of::<FftPointwiseParams>() == FFT_POINTWISE_PARAMS_SIZE);

/// Parameters of `fft_centre_f32` (kernels/fft.cu): the centring and
/// orthonormal scaling of a 2-D transform a library (cuFFT) computed plain —
/// unshifted, unscaled — in one gather over every complex output element
/// (`docs/math.md` §10.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct FftCentreParams {
    /// Complex elements in total (planes · H · W).
    pub n_out: u32,
    pub height: u32,
    pub width: u32,
    /// 0: the forward transform; 1: the inverse.
    pub inverse: u32,
    /// Where the twiddles `e^{−2πik/W}` and `e^{−2πik/H}` start in the
    /// twiddle table (complex elements).
    pub width_twiddles: u32,
    pub height_twiddles: u32,
    pub _pad: u32,
    /// `1/√(HW)`: the orthonormal scaling.
    pub scale: f32,
}

/// Byte size the kernels assert for [`FftCentreParams`].
pub const FFT_CENTRE_PARAMS_SIZE: usize = 32;
const _: () = assert!(std::mem::size_of::<FftCentreParams>() == FFT_CENTRE_PARAMS_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::Corrector;

    const LAUNCH: StepLaunch = StepLaunch {
        step: 7,
        seed: 0x1234_5678_9abc_def0,
    };

    fn plain_step() -> SolverStep {
        SolverStep {
            cx: 1.5,
            ce: 0.25,
            d_slot: Some(0),
            h1: Some(1),
            h2: None,
            xc_slot: None,
            corrector: None,
            a: 0.5,
            b: [0.25, 0.125, 0.0],
            noise: 0.0,
        }
    }

    #[test]
    fn params_resolve_slots_like_the_cpu_reference() {
        let p = SolverStepParams::new(&plain_step(), LAUNCH, 100, 128);
        assert_eq!(
            (p.n, p.stride, p.d_slot, p.h1, p.h2, p.xc_slot, p.corr_mode),
            (100, 128, 0, 1, NO_SLOT, NO_SLOT, CORR_OFF)
        );
        assert_eq!(
            (p.step, p.seed_lo, p.seed_hi),
            (7, 0x9abc_def0, 0x1234_5678)
        );
        // A slot named twice belongs to the first role in the order d, xc, h1, h2.
        let aliased = SolverStep {
            h1: Some(0),
            h2: Some(0),
            ..plain_step()
        };
        let p = SolverStepParams::new(&aliased, LAUNCH, 100, 128);
        assert_eq!((p.d_slot, p.h1, p.h2), (0, NO_SLOT, NO_SLOT));
        let corr = Corrector {
            base: CorrectorBase::Slot,
            a: 1.0,
            c: [0.5, 0.0, 0.0],
        };
        let with_xc = SolverStep {
            xc_slot: Some(2),
            h2: Some(2),
            corrector: Some(corr),
            ..plain_step()
        };
        let p = SolverStepParams::new(&with_xc, LAUNCH, 100, 128);
        assert_eq!((p.xc_slot, p.h2, p.corr_mode), (2, NO_SLOT, CORR_FROM_SLOT));
        let from_x = SolverStep {
            corrector: Some(Corrector {
                base: CorrectorBase::X,
                ..corr
            }),
            ..with_xc
        };
        assert_eq!(
            SolverStepParams::new(&from_x, LAUNCH, 100, 128).corr_mode,
            CORR_FROM_X
        );
        // A corrector without its slot is off (the CPU skips it), never an index of NO_SLOT.
        let no_slot = SolverStep {
            corrector: Some(corr),
            ..plain_step()
        };
        let p = SolverStepParams::new(&no_slot, LAUNCH, 100, 128);
        assert_eq!((p.xc_slot, p.corr_mode), (NO_SLOT, CORR_OFF));
    }
}
