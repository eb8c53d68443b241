//! Hand-made solver steps that exercise every path of the fused kernels: each
//! combination of history slots, both corrector bases, noise, the final step.

use diffinv::solver::{Corrector, CorrectorBase, SolverStep};

/// Every input and output in use (d, h1, h2, corrector from its slot), and noise.
pub fn full_step() -> SolverStep {
    SolverStep {
        cx: 1.25,
        ce: 0.75,
        d_slot: Some(0),
        h1: Some(2),
        h2: Some(1),
        xc_slot: Some(3),
        corrector: Some(Corrector {
            base: CorrectorBase::Slot,
            a: 0.97,
            c: [0.09, 0.1, -0.01],
        }),
        a: 0.9,
        b: [0.46, -0.14, 0.05],
        noise: 0.2,
    }
}

/// Step shapes that exercise every path of the kernel.
pub fn step_kinds() -> Vec<(&'static str, SolverStep)> {
    let base = SolverStep {
        cx: 1.25,
        ce: 0.75,
        d_slot: None,
        h1: None,
        h2: None,
        xc_slot: None,
        corrector: None,
        a: 0.9,
        b: [0.3, 0.0, 0.0],
        noise: 0.0,
    };
    let from_slot = SolverStep {
        noise: 0.0,
        ..full_step()
    };
    vec![
        (
            "first order, noise",
            SolverStep {
                noise: 0.35,
                ..base
            },
        ),
        (
            "third order multistep",
            SolverStep {
                d_slot: Some(2),
                h1: Some(1),
                h2: Some(0),
                b: [0.5, -0.25, 0.125],
                ..base
            },
        ),
        ("corrector from slot", from_slot),
        ("corrector from slot, noise", full_step()),
        (
            "corrector copies x",
            SolverStep {
                d_slot: Some(1),
                xc_slot: Some(3),
                corrector: Some(Corrector {
                    base: CorrectorBase::X,
                    a: 1.0,
                    c: [0.0; 3],
                }),
                ..base
            },
        ),
        (
            "final step to sigma 0",
            SolverStep {
                a: 0.0,
                b: [1.0, 0.0, 0.0],
                ..base
            },
        ),
    ]
}
