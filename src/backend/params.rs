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
        SolverStepParams {
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
        }
    }
}
