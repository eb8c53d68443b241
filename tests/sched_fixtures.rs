//! Replay of diffusers' scheduler trajectories (`tests/fixtures/sched`).
//!
//! Data-driven: every configuration the manifest lists is mapped from its
//! diffusers scheduler class and config to a [`PlanConfig`], so configurations
//! of the same format added to the fixture files are picked up without code.
//! The analytic GMM model of the fixture README drives full loops; teacher
//! forcing (stored x[k] and ε[k] in, x[k+1] compared) isolates each step.

mod common;

use common::compare;
use common::fixtures::{sched_manifest, Fixture};
use diffinv::backend::cpu::CpuBackend;
use diffinv::{
    sample, BetaSchedule, DType, FinalSigma, GmmDenoiser, GridSpec, HostSlice, NoiseSchedule, Plan,
    PlanConfig, Prediction, SamplerOptions, SecondOrder, Shape, Solver, SolverRun, Spacing, Tensor,
};
use serde_json::Value;

/// One manifest configuration, mapped to the crate's types.
struct Case {
    name: String,
    schedule: NoiseSchedule,
    plan_config: PlanConfig,
    timesteps: Vec<f64>,
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("config key {key} is not a string: {}", v[key]))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("config key {key} is not a number: {}", v[key]))
}

fn b(v: &Value, key: &str) -> bool {
    v[key]
        .as_bool()
        .unwrap_or_else(|| panic!("config key {key} is not a bool: {}", v[key]))
}

fn case(c: &Value) -> Case {
    let name = s(c, "name").to_owned();
    let cfg = &c["scheduler_config"];
    let beta = BetaSchedule::from_diffusers(
        s(cfg, "beta_schedule"),
        f(cfg, "beta_start"),
        f(cfg, "beta_end"),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        cfg["trained_betas"].is_null(),
        "{name}: trained_betas is not supported by this replay"
    );
    let schedule =
        NoiseSchedule::new(beta, f(cfg, "num_train_timesteps") as usize).expect("schedule");
    let steps = c["num_inference_steps"]
        .as_u64()
        .expect("num_inference_steps") as usize;
    let prediction = match s(cfg, "prediction_type") {
        "epsilon" => Prediction::Epsilon,
        "v_prediction" => Prediction::V,
        other => panic!("{name}: prediction_type {other} not supported"),
    };
    let spacing = Spacing::from_name(s(cfg, "timestep_spacing")).expect("spacing");
    let steps_offset = cfg["steps_offset"].as_u64().unwrap_or(0) as usize;
    let flag = |key: &str| cfg.get(key).and_then(Value::as_bool).unwrap_or(false);
    let grid = if flag("use_karras_sigmas") {
        GridSpec::Karras { rho: 7.0 }
    } else if flag("use_lu_lambdas") {
        GridSpec::LogSnr
    } else {
        GridSpec::Diffusers {
            spacing,
            steps_offset,
        }
    };
    let final_sigma = match cfg
        .get("final_sigmas_type")
        .and_then(Value::as_str)
        .unwrap_or("zero")
    {
        "zero" => FinalSigma::Zero,
        "sigma_min" => FinalSigma::SigmaMin,
        other => panic!("{name}: final_sigmas_type {other}"),
    };
    let solver = match s(c, "scheduler") {
        "DDIMScheduler" => {
            assert!(
                !b(cfg, "clip_sample"),
                "{name}: clip_sample is not supported"
            );
            assert!(
                b(cfg, "set_alpha_to_one"),
                "{name}: set_alpha_to_one=false is not supported"
            );
            Solver::Ddim {
                eta: c["step_kwargs"]["eta"].as_f64().unwrap_or(0.0),
            }
        }
        "DPMSolverMultistepScheduler" => {
            assert_eq!(s(cfg, "algorithm_type"), "dpmsolver++", "{name}");
            assert!(
                !b(cfg, "thresholding"),
                "{name}: thresholding is not supported"
            );
            Solver::DpmSolverPP {
                order: cfg["solver_order"].as_u64().expect("solver_order") as u8,
                second_order: match s(cfg, "solver_type") {
                    "midpoint" => SecondOrder::Midpoint,
                    "heun" => SecondOrder::Heun,
                    other => panic!("{name}: solver_type {other}"),
                },
                lower_order_final: b(cfg, "lower_order_final"),
                euler_at_final: b(cfg, "euler_at_final"),
            }
        }
        "UniPCMultistepScheduler" => {
            assert_eq!(s(cfg, "solver_type"), "bh2", "{name}");
            assert_eq!(cfg["solver_order"].as_u64(), Some(2), "{name}");
            assert!(
                b(cfg, "predict_x0") && b(cfg, "lower_order_final"),
                "{name}"
            );
            Solver::UniPc
        }
        other => panic!("{name}: scheduler {other} has no mapping"),
    };
    let timesteps = c["timesteps"]
        .as_array()
        .expect("timesteps")
        .iter()
        .map(|t| t.as_f64().expect("timestep"))
        .collect();
    Case {
        name,
        schedule,
        plan_config: PlanConfig {
            solver,
            grid,
            steps,
            final_sigma,
            prediction,
        },
        timesteps,
    }
}

fn cases() -> Vec<Case> {
    let m = sched_manifest();
    m["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(case)
        .collect()
}

fn gmm(stock: &Fixture, schedule: &NoiseSchedule) -> GmmDenoiser {
    let (means, shape) = stock.f64("gmm.means");
    let (stds, _) = stock.f64("gmm.stds");
    let (weights, _) = stock.f64("gmm.weights");
    let dim = shape[1..].iter().product();
    GmmDenoiser::new(means, stds, weights, dim, schedule.clone()).expect("gmm")
}

fn sample_shape() -> Shape {
    let m = sched_manifest();
    let d: Vec<usize> = m["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    Shape::new(d[0], d[1], d[2], d[3])
}

#[test]
fn manifest_lists_every_scheduler_family() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    assert!(names.len() >= 54, "{} configurations", names.len());
    for family in [
        "dpmpp2m_midpoint",
        "dpmpp2m_heun",
        "dpmpp3m_midpoint",
        "dpmpp3m_heun",
        "ddim_eta0",
        "unipc_bh2",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "{family} missing"
        );
    }
}

#[test]
fn alphas_cumprod_match_the_f64_table() {
    let stock = Fixture::open("sched/schedulers.safetensors");
    let (abar, _) = stock.f64("abar_f64.linear");
    let ours = NoiseSchedule::new(BetaSchedule::DDPM, 1000).unwrap();
    compare("abar", ours.alphas_cumprod(), &abar, 1e-15, 1e-15);
}

#[test]
fn timesteps_and_sigmas_match_diffusers() {
    let f64s = Fixture::open("sched/schedulers_f64.safetensors");
    for c in cases() {
        let plan =
            Plan::new(&c.schedule, &c.plan_config).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let taus: Vec<f64> = plan.steps.iter().map(|s| s.point.tau).collect();
        assert_eq!(taus, c.timesteps, "{}: timesteps", c.name);
        let key = format!("{}.sigmas", c.name);
        if f64s.has(&key) {
            // diffusers' sigmas are VE: s = σ/α, with the final 0 appended.
            let (want, _) = f64s.f64(&key);
            let mut got: Vec<f64> = plan
                .steps
                .iter()
                .map(|s| s.point.sigma / s.point.alpha)
                .collect();
            let last = plan.steps.last().unwrap().target;
            got.push(last.sigma / last.alpha);
            compare(&format!("{}: sigmas", c.name), &got, &want, 1e-13, 1e-12);
        }
    }
}

/// Full loop on the CPU backend in f64 with the analytic model.
fn run_f64(c: &Case, stock: &Fixture) -> Vec<f64> {
    let cpu = CpuBackend::new();
    let plan = Plan::new(&c.schedule, &c.plan_config).unwrap();
    let (x_t, _) = stock.f64("x_T");
    let mut x = Tensor::from_host(&cpu, sample_shape(), DType::F64, HostSlice::F64(&x_t)).unwrap();
    let mut model = gmm(stock, &c.schedule);
    sample(
        &cpu,
        &plan,
        &mut model,
        &mut x,
        SamplerOptions::default(),
        |_| {},
    )
    .unwrap();
    x.to_f64(&cpu).unwrap()
}

#[test]
fn full_loops_match_diffusers_f64_and_stock() {
    let stock = Fixture::open("sched/schedulers.safetensors");
    let f64s = Fixture::open("sched/schedulers_f64.safetensors");
    let (mut worst64, mut worst32) = (0.0f64, 0.0f64);
    for c in cases() {
        let got = run_f64(&c, &stock);
        let (want64, _) = f64s.f64(&format!("{}.x_final", c.name));
        let max64 = got
            .iter()
            .zip(&want64)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max64 <= 1e-9,
            "{}: f64 loop vs diffusers f64: max abs {max64:.3e}",
            c.name
        );
        let (xs, shape) = stock.f64(&format!("{}.x", c.name));
        let last = &xs[(shape[0] - 1) * got.len()..];
        let max32 = got
            .iter()
            .zip(last)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max32 <= 1e-5,
            "{}: f64 loop vs stock diffusers: max abs {max32:.3e}",
            c.name
        );
        worst64 = worst64.max(max64);
        worst32 = worst32.max(max32);
    }
    eprintln!("full loops: max abs vs diffusers f64 {worst64:.3e}, vs stock {worst32:.3e}");
}

#[test]
fn teacher_forced_steps_match_stock_diffusers() {
    let stock = Fixture::open("sched/schedulers.safetensors");
    let cpu = CpuBackend::new();
    let mut overall = 0.0f64;
    for c in cases() {
        let plan = Plan::new(&c.schedule, &c.plan_config).unwrap();
        let (xs, _) = stock.f64(&format!("{}.x", c.name));
        let (eps, _) = stock.f64(&format!("{}.eps", c.name));
        let n = sample_shape().checked_len().unwrap();
        let mut run = SolverRun::new(
            &cpu,
            &plan,
            sample_shape(),
            DType::F64,
            SamplerOptions::default(),
        )
        .unwrap();
        let mut x = Tensor::zeros(&cpu, sample_shape(), DType::F64).unwrap();
        let mut worst = 0.0f64;
        for k in 0..plan.len() {
            x.upload(&cpu, HostSlice::F64(&xs[k * n..(k + 1) * n]))
                .unwrap();
            run.model_out_mut()
                .upload(&cpu, HostSlice::F64(&eps[k * n..(k + 1) * n]))
                .unwrap();
            run.step(&cpu, k, &mut x).unwrap();
            let got = x.to_f64(&cpu).unwrap();
            let want = &xs[(k + 1) * n..(k + 2) * n];
            let err = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            worst = worst.max(err);
        }
        // Stock diffusers builds its tables and steps in f32 (≤ 1.5e-6 observed against an independent f64 implementation).
        assert!(
            worst <= 5e-6,
            "{}: teacher-forced max abs {worst:.3e}",
            c.name
        );
        overall = overall.max(worst);
    }
    eprintln!("teacher forcing: max abs vs stock {overall:.3e}");
}
