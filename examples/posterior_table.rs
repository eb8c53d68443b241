//! The exact-posterior benchmark (`docs/math.md` §8; tables in BENCHMARKS.md):
//! samplers for linear inverse problems against the closed-form posterior of
//! a Gaussian-mixture prior on 3×16×16 data.
//!
//! ```text
//! cargo run --release --example posterior_table -- [--prior fixture|image|both]
//!     [--samples N] [--ys K] [--nfe 5,10,20,50] [--tune-samples M] [--tune-ys T]
//!     [--tasks a,b] [--methods a,b]
//! ```
//!
//! Priors: `fixture`, the isotropic 3-component mixture of the official-code
//! fixtures (`tests/fixtures/ipsolvers/gmm.safetensors`), where a scalar
//! Tweedie variance is exact; `image`, 3 scenes × 2 variants with rank-48
//! covariances from a colour × 2-D DCT basis (global modes λ_j ∝ j^−1.5, plus
//! local modes inside the inpainting box), the two variants of a scene apart by
//! a Mahalanobis distance of 3 along a local mode, so box inpainting is bimodal.
//! Tasks: box and random-70 % inpainting, 4× SR (average pooling), colorization,
//! Gaussian deblur, noisy 4× SR (`--tasks` keeps those whose name contains one
//! of the given words; `--methods` likewise).
//! Every method runs on the CPU backend in f64 with the GMM's exact ε, on N
//! samples per y; its weight (w or ζ) is tuned per task and NFE on separate
//! y's (the lowest mean SW-2 over `--tune-ys` of them, drawn like the reported
//! ones from other seeds). A Jacobian product counts as one NFE.

use std::time::Instant;

use diffinv::backend::cpu::CpuBackend;
use diffinv::gmm::metrics::{posterior_metrics, sliced_wasserstein2, PosteriorMetrics};
use diffinv::gmm::posterior::DenseOperator;
use diffinv::gmm::{ExactPosterior, GmmComponent};
use diffinv::guidance::{CpgdmConfig, CpgdmPlan, PgdmDiscreteConfig, PgdmDiscretePlan};
use diffinv::ops::operator::separable::gaussian_taps;
use diffinv::ops::{CgOptions, Operator};
use diffinv::sampler::{
    dds_sample, dps_sample, guided_sample, DataConsistency, DdsConfig, DdsPlan, DpsConfig, DpsPlan,
    GuidedOptions, Jacobian,
};
use diffinv::{
    rng, sample, DType, GmmDenoiser, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions,
    Shape, Solver, Tensor,
};

const C: usize = 3;
const SIDE: usize = 16;
const DIM: usize = C * SIDE * SIDE;
/// The inpainting box (rows, columns), as in the official fixtures.
const BOX_ROWS: std::ops::Range<usize> = 3..11;
const BOX_COLS: std::ops::Range<usize> = 5..13;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    priors: Vec<&'static str>,
    samples: usize,
    ys: usize,
    nfes: Vec<usize>,
    tune_samples: usize,
    tune_ys: usize,
    tasks: Vec<String>,
    methods: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        priors: vec!["fixture", "image"],
        samples: 128,
        ys: 3,
        nfes: vec![5, 10, 20, 50],
        tune_samples: 32,
        tune_ys: 3,
        tasks: Vec::new(),
        methods: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--prior" => {
                args.priors = match value()?.as_str() {
                    "fixture" => vec!["fixture"],
                    "image" => vec!["image"],
                    "both" => vec!["fixture", "image"],
                    other => return Err(format!("unknown prior {other}").into()),
                }
            }
            "--samples" => args.samples = value()?.parse()?,
            "--ys" => args.ys = value()?.parse()?,
            "--tune-samples" => args.tune_samples = value()?.parse()?,
            "--tune-ys" => args.tune_ys = value()?.parse()?,
            "--tasks" => args.tasks = value()?.split(',').map(str::to_string).collect(),
            "--methods" => args.methods = value()?.split(',').map(str::to_string).collect(),
            "--nfe" => {
                args.nfes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.samples < 2 || args.ys == 0 || args.tune_samples < 2 || args.tune_ys == 0 {
        return Err("need --samples ≥ 2, --ys ≥ 1, --tune-samples ≥ 2, --tune-ys ≥ 1".into());
    }
    Ok(args)
}

fn item() -> Shape {
    Shape::new(1, C, SIDE, SIDE).item()
}

/// A degradation: its operator, and the std of the Gaussian noise in y.
struct Task {
    name: &'static str,
    op: Operator<CpuBackend>,
    noise: f64,
}

fn tasks(b: &CpuBackend) -> Result<Vec<Task>> {
    let pixel_mask = |observed: &dyn Fn(usize, usize) -> bool| -> Vec<f32> {
        (0..DIM)
            .map(|i| {
                let (r, c) = ((i / SIDE) % SIDE, i % SIDE);
                if observed(r, c) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    };
    let boxed = pixel_mask(&|r, c| !(BOX_ROWS.contains(&r) && BOX_COLS.contains(&c)));
    // 70 % of the pixels missing, all channels of a pixel together, seeded.
    let random = pixel_mask(&|r, c| rng::uniforms(77, 0, (r * SIDE + c) as u32).1 >= 0.7);
    Ok(vec![
        Task {
            name: "inpaint box",
            op: Operator::inpaint(b, item(), &boxed, true)?,
            noise: 0.0,
        },
        Task {
            name: "inpaint random 70%",
            op: Operator::inpaint(b, item(), &random, true)?,
            noise: 0.0,
        },
        Task {
            name: "sr4",
            op: Operator::avg_pool(b, item(), 4)?,
            noise: 0.0,
        },
        Task {
            name: "colorize",
            op: Operator::colorize(b, item(), [1.0 / 3.0; 3])?,
            noise: 0.0,
        },
        // σ = 1.5 px, 9 taps (the official σ = 3 with 61 taps is for 256²).
        Task {
            name: "gaussian deblur",
            op: Operator::blur(b, item(), &gaussian_taps(1.5, 4))?,
            noise: 0.0,
        },
        // The official noisy C-ΠGDM setting: σ_y = 0.05, y gets 2σ_y noise.
        Task {
            name: "noisy sr4 (σ_y 0.05)",
            op: Operator::avg_pool(b, item(), 4)?,
            noise: 0.1,
        },
    ])
}

/// The isotropic mixture of the official-code fixtures.
fn fixture_prior() -> Result<GmmDenoiser> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ipsolvers/gmm.safetensors"
    );
    let bytes = std::fs::read(path)?;
    let file = safetensors::SafeTensors::deserialize(&bytes)?;
    let f64s = |name: &str| -> Result<Vec<f64>> {
        let t = file.tensor(name)?;
        Ok(t.data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    };
    Ok(GmmDenoiser::new(
        f64s("gmm.means")?,
        f64s("gmm.stds")?,
        f64s("gmm.weights")?,
        DIM,
        NoiseSchedule::ddpm_linear(),
    )?)
}

/// Orthonormal DCT-II vector p of length n.
fn dct(p: usize, n: usize, i: usize) -> f64 {
    let scale = if p == 0 { 1.0 } else { 2.0 };
    (scale / n as f64).sqrt()
        * (std::f64::consts::PI * (2 * i + 1) as f64 * p as f64 / (2 * n) as f64).cos()
}

/// Colour directions: luminance, then two chroma axes.
const COLOURS: [[f64; 3]; 3] = [
    [0.577_350_269_189_625_8; 3],
    [0.707_106_781_186_547_5, -0.707_106_781_186_547_5, 0.0],
    [
        0.408_248_290_463_863,
        0.408_248_290_463_863,
        -0.816_496_580_927_726,
    ],
];

/// The image-like mixture: 3 scenes × 2 variants.
fn image_prior() -> Result<GmmDenoiser> {
    // Global modes: colour × 2-D DCT, ordered by frequency, chroma after luminance.
    let mut modes: Vec<(usize, usize, usize)> = (0..3)
        .flat_map(|c| (0..SIDE).flat_map(move |p| (0..SIDE).map(move |q| (c, p, q))))
        .collect();
    modes.sort_by_key(|&(c, p, q)| (p + q + 2 * usize::from(c > 0), c, p, q));
    let global: Vec<Vec<f64>> = modes[..40]
        .iter()
        .map(|&(c, p, q)| {
            (0..DIM)
                .map(|i| {
                    let (ch, r, col) = (i / (SIDE * SIDE), (i / SIDE) % SIDE, i % SIDE);
                    COLOURS[c][ch] * dct(p, SIDE, r) * dct(q, SIDE, col)
                })
                .collect()
        })
        .collect();
    // Local modes inside the box (luminance, low frequencies), orthogonalised
    // against the global ones.
    let (bh, bw) = (BOX_ROWS.len(), BOX_COLS.len());
    let mut basis = global;
    let local_freqs = [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (0, 2),
        (2, 0),
        (1, 2),
        (2, 1),
    ];
    for &(p, q) in &local_freqs {
        let mut u: Vec<f64> = (0..DIM)
            .map(|i| {
                let (ch, r, col) = (i / (SIDE * SIDE), (i / SIDE) % SIDE, i % SIDE);
                if BOX_ROWS.contains(&r) && BOX_COLS.contains(&col) {
                    COLOURS[0][ch]
                        * dct(p, bh, r - BOX_ROWS.start)
                        * dct(q, bw, col - BOX_COLS.start)
                } else {
                    0.0
                }
            })
            .collect();
        for b in &basis {
            let proj: f64 = u.iter().zip(b).map(|(x, y)| x * y).sum();
            u.iter_mut().zip(b).for_each(|(x, y)| *x -= proj * y);
        }
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.iter_mut().for_each(|x| *x /= norm);
        basis.push(u);
    }
    let rank = basis.len();
    let lambdas: Vec<f64> = (0..rank)
        .map(|j| {
            if j < 40 {
                30.0 * ((j + 1) as f64).powf(-1.5)
            } else {
                3.0 / (j - 39) as f64
            }
        })
        .collect();
    let local = &basis[40];
    let mut components = Vec::new();
    for (scene, (std, weights)) in [
        (0.03, [0.2, 0.2]),
        (0.05, [0.18, 0.12]),
        (0.08, [0.16, 0.14]),
    ]
    .into_iter()
    .enumerate()
    {
        // The scene: a draw of a few global modes at twice their prior scale.
        let mut mean = vec![0.0; DIM];
        for (j, u) in basis[..12].iter().enumerate() {
            let coef = 2.0 * lambdas[j].sqrt() * rng::normal_f64(900 + scene as u64, 0, j as u32);
            mean.iter_mut().zip(u).for_each(|(m, v)| *m += coef * v);
        }
        // Variants ±δ/2 along the first local mode, δ = 3·√(λ + s²).
        let delta = 3.0 * (lambdas[40] + std * std).sqrt();
        for (sign, weight) in [(-0.5, weights[0]), (0.5, weights[1])] {
            components.push(GmmComponent {
                weight,
                mean: mean
                    .iter()
                    .zip(local)
                    .map(|(m, u)| m + sign * delta * u)
                    .collect(),
                std,
                basis: basis.concat(),
                lambdas: lambdas.clone(),
            });
        }
    }
    Ok(GmmDenoiser::from_components(
        components,
        DIM,
        NoiseSchedule::ddpm_linear(),
    )?)
}

/// A sampler of the benchmark and how many NFE one of its steps costs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Ddim,
    Pgdm,
    Cpgdm(Jacobian),
    /// C-ΠGDM with the exact Jacobian at the official w (15; noisy: 2), untuned.
    CpgdmOfficial,
    Dps,
    /// DDS with M CG iterations per step (γ tuned, η = 0.85).
    Dds(usize),
}

impl Method {
    fn all() -> [Method; 10] {
        [
            Method::Ddim,
            Method::Pgdm,
            Method::Cpgdm(Jacobian::Exact),
            Method::Cpgdm(Jacobian::FiniteDifference),
            Method::Cpgdm(Jacobian::Dropped),
            Method::CpgdmOfficial,
            Method::Dps,
            Method::Dds(1),
            Method::Dds(3),
            Method::Dds(5),
        ]
    }

    fn name(self) -> String {
        match self {
            Method::Ddim => "DDIM (unconditional)".into(),
            Method::Pgdm => "ΠGDM".into(),
            Method::Cpgdm(j) => format!(
                "C-ΠGDM {}",
                match j {
                    Jacobian::Exact => "exact J",
                    Jacobian::FiniteDifference => "FD J",
                    Jacobian::Dropped => "J dropped",
                }
            ),
            Method::CpgdmOfficial => "C-ΠGDM exact J, official w".into(),
            Method::Dps => "DPS".into(),
            Method::Dds(m) => format!("DDS M={m}"),
        }
    }

    fn nfe_per_step(self) -> usize {
        match self {
            Method::Ddim | Method::Cpgdm(Jacobian::Dropped) | Method::Dds(_) => 1,
            _ => 2,
        }
    }

    /// The weight grid tuned over (w or ζ); empty: nothing to tune.
    fn weights(self, noisy: bool) -> Vec<f64> {
        match self {
            Method::Ddim => vec![0.0],
            Method::Pgdm => vec![0.25, 0.5, 1.0, 2.0, 4.0],
            Method::CpgdmOfficial if noisy => vec![2.0],
            Method::CpgdmOfficial => vec![15.0],
            Method::Cpgdm(_) if noisy => vec![0.5, 1.0, 2.0, 4.0, 8.0],
            Method::Cpgdm(_) => vec![5.0, 15.0, 30.0, 60.0, 120.0],
            Method::Dps => vec![0.3, 1.0, 3.0, 10.0, 30.0],
            Method::Dds(_) => vec![0.3, 1.0, 3.0, 10.0, 100.0],
        }
    }
}

/// One measurement of a task and everything exact about it.
struct Case {
    y: Vec<f64>,
    posterior: ExactPosterior,
    exact: Vec<f64>,
}

fn case(prior: &GmmDenoiser, task: &Task, h: &DenseOperator, seed: u64, n: usize) -> Result<Case> {
    let x0 = prior.sample_prior(seed, 1);
    let y: Vec<f64> = h
        .apply(&x0)
        .iter()
        .enumerate()
        .map(|(i, v)| v + task.noise * rng::normal_f64(seed, 7, i as u32))
        .collect();
    let posterior = ExactPosterior::new(prior, h, &y, task.noise)?;
    let exact = posterior.sample(seed + 1, n);
    Ok(Case {
        y,
        posterior,
        exact,
    })
}

/// N samples of `method` for y; returns them with the NFE actually spent.
#[allow(clippy::too_many_arguments)]
fn run(
    b: &CpuBackend,
    prior: &GmmDenoiser,
    task: &Task,
    method: Method,
    nfe: usize,
    weight: f64,
    y: &[f64],
    n: usize,
    seed: u64,
) -> Result<(Vec<f64>, usize)> {
    let steps = (nfe / method.nfe_per_step()).max(1);
    let x_shape = Shape::new(n, C, SIDE, SIDE);
    let y_item = task.op.y_item();
    let y_shape = Shape::from_dims(&[&[n][..], y_item.dims()].concat())?;
    let ys: Vec<f64> = (0..n).flat_map(|_| y.iter().copied()).collect();
    let yt = Tensor::from_host(b, y_shape, DType::F64, HostSlice::F64(&ys))?;
    let z: Vec<f64> = (0..n * DIM)
        .map(|i| rng::normal_f64(seed, 0, i as u32))
        .collect();
    let zt = Tensor::from_host(b, x_shape, DType::F64, HostSlice::F64(&z))?;
    let mut gmm = prior.clone();
    let x = match method {
        Method::Ddim => {
            let plan = Plan::new(
                &NoiseSchedule::ddpm_linear(),
                &PlanConfig {
                    solver: Solver::Ddim { eta: 0.0 },
                    steps,
                    ..PlanConfig::default()
                },
            )?;
            let mut x = zt;
            sample(
                b,
                &plan,
                &mut gmm,
                &mut x,
                SamplerOptions::default(),
                |_| {},
            )?;
            x
        }
        Method::Pgdm => {
            let plan = PgdmDiscretePlan::new(PgdmDiscreteConfig {
                steps,
                w: weight,
                ..PgdmDiscreteConfig::default()
            })?;
            guided_sample(
                b,
                &plan,
                &task.op,
                &yt,
                &zt,
                &mut gmm,
                GuidedOptions {
                    jacobian: Jacobian::Exact,
                    seed,
                },
                |_| {},
            )?
        }
        Method::Cpgdm(_) | Method::CpgdmOfficial => {
            let jacobian = match method {
                Method::Cpgdm(j) => j,
                _ => Jacobian::Exact,
            };
            let noisy = task.noise > 0.0;
            let plan = CpgdmPlan::new(CpgdmConfig {
                steps,
                w: weight,
                // The official noisy setting: λ = −0.15, σ_y in its halved units.
                lambda: if noisy { -0.15 } else { 0.0 },
                sigma_y: task.noise / 2.0,
                ..CpgdmConfig::default()
            })?;
            guided_sample(
                b,
                &plan,
                &task.op,
                &yt,
                &zt,
                &mut gmm,
                GuidedOptions { jacobian, seed },
                |_| {},
            )?
        }
        Method::Dps => {
            let plan = DpsPlan::new(DpsConfig {
                steps,
                zeta: weight,
                ..DpsConfig::default()
            })?;
            dps_sample(
                b,
                &plan,
                &task.op,
                &yt,
                &zt,
                &mut gmm,
                GuidedOptions {
                    jacobian: Jacobian::Exact,
                    seed,
                },
            )?
        }
        Method::Dds(m) => {
            let plan = DdsPlan::new(DdsConfig {
                steps,
                cg: CgOptions {
                    iterations: m,
                    tolerance: None,
                },
                consistency: DataConsistency::Tikhonov { gamma: weight },
                ..DdsConfig::default()
            })?;
            dds_sample(b, &plan, &task.op, &yt, &zt, &mut gmm, seed, |_| {})?
        }
    };
    Ok((x.to_f64(b)?, steps * method.nfe_per_step()))
}

/// The weight with the lowest mean SW-2 over the tuning y's.
#[allow(clippy::too_many_arguments)]
fn tune(
    b: &CpuBackend,
    prior: &GmmDenoiser,
    task: &Task,
    method: Method,
    nfe: usize,
    tuning: &[Case],
    n: usize,
) -> Result<f64> {
    let grid = method.weights(task.noise > 0.0);
    if let [only] = grid[..] {
        return Ok(only);
    }
    let mut best = (f64::INFINITY, 0.0);
    for w in grid {
        let mut total = 0.0;
        for case in tuning {
            let (x, _) = run(b, prior, task, method, nfe, w, &case.y, n, 4242)?;
            total += sliced_wasserstein2(&x, &case.exact[..n * DIM], DIM)?;
        }
        if total < best.0 {
            best = (total, w);
        }
    }
    Ok(best.1)
}

fn mean_metrics(all: &[PosteriorMetrics]) -> PosteriorMetrics {
    let k = all.len() as f64;
    let sum = |f: fn(&PosteriorMetrics) -> f64| all.iter().map(f).sum::<f64>() / k;
    PosteriorMetrics {
        sliced_w2: sum(|m| m.sliced_w2),
        mean_rel_error: sum(|m| m.mean_rel_error),
        consistency: sum(|m| m.consistency),
        proportion_tv: sum(|m| m.proportion_tv),
        spread: sum(|m| m.spread),
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let b = CpuBackend::new();
    let tasks = tasks(&b)?;
    println!(
        "exact-posterior benchmark: {} samples per y, {} y per task, weights tuned on {} other y with {} samples each; NFE {:?}",
        args.samples, args.ys, args.tune_ys, args.tune_samples, args.nfes
    );
    for prior_name in &args.priors {
        let prior = match *prior_name {
            "fixture" => fixture_prior()?,
            _ => image_prior()?,
        };
        println!(
            "\n## prior: {prior_name} ({} components)\n",
            prior.components().len()
        );
        let chosen = tasks.iter().filter(|t| {
            args.tasks.is_empty() || args.tasks.iter().any(|w| t.name.contains(w.as_str()))
        });
        for task in chosen {
            let h = DenseOperator::of(&b, &task.op)?;
            let cases: Vec<Case> = (0..args.ys)
                .map(|i| case(&prior, task, &h, 1000 + 10 * i as u64, args.samples))
                .collect::<Result<_>>()?;
            let tuning: Vec<Case> = (0..args.tune_ys)
                .map(|i| case(&prior, task, &h, 5000 + 10 * i as u64, args.tune_samples))
                .collect::<Result<_>>()?;
            println!("### {prior_name} · {task}\n", task = task.name);
            for (i, c) in cases.iter().enumerate() {
                let w: Vec<String> = c
                    .posterior
                    .weights()
                    .iter()
                    .map(|w| format!("{w:.3}"))
                    .collect();
                let floor = sliced_wasserstein2(
                    &c.exact,
                    &c.posterior.sample(77 + i as u64, args.samples),
                    DIM,
                )?;
                let prior_sw = sliced_wasserstein2(
                    &prior.sample_prior(88 + i as u64, args.samples),
                    &c.exact,
                    DIM,
                )?;
                println!("y{i}: posterior weights [{}]; exact-vs-exact SW-2 {floor:.4}; prior SW-2 {prior_sw:.4}", w.join(", "));
            }
            println!("\n| method | NFE | weight | SW-2 | mean rel err | consistency | prop TV | spread | s/run |");
            println!("|---|---|---|---|---|---|---|---|---|");
            let methods = Method::all().into_iter().filter(|m| {
                args.methods.is_empty()
                    || args.methods.iter().any(|w| m.name().contains(w.as_str()))
            });
            for method in methods {
                for &nfe in &args.nfes {
                    let weight = tune(&b, &prior, task, method, nfe, &tuning, args.tune_samples)?;
                    let mut metrics = Vec::new();
                    let mut spent = 0;
                    let start = Instant::now();
                    for (i, c) in cases.iter().enumerate() {
                        let (x, used) = run(
                            &b,
                            &prior,
                            task,
                            method,
                            nfe,
                            weight,
                            &c.y,
                            args.samples,
                            31 + i as u64,
                        )?;
                        spent = used;
                        metrics.push(posterior_metrics(&c.posterior, &x, &c.exact)?);
                    }
                    let secs = start.elapsed().as_secs_f64() / cases.len() as f64;
                    let m = mean_metrics(&metrics);
                    println!(
                        "| {} | {spent} | {weight} | {:.4} | {:.3} | {:.2e} | {:.3} | {:.3} | {secs:.2} |",
                        method.name(), m.sliced_w2, m.mean_rel_error, m.consistency, m.proportion_tv, m.spread
                    );
                }
            }
            println!();
        }
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
