//! Loading the diffusers oracle fixtures copied into `tests/fixtures/`.

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// Path of a file under `tests/fixtures/`.
pub fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A safetensors file held in memory.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn open(rel: &str) -> Fixture {
        let p = path(rel);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        Fixture { bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// A tensor widened to f64, with its shape.
    pub fn f64(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
        let (v, _, shape) = read(&self.tensors(), name);
        (v, shape)
    }
}

/// A tensor of a safetensors file widened to f64 (f64, f32, f16, i64 and
/// bool hold every fixture), with its stored dtype and shape.
pub fn read(st: &SafeTensors<'_>, name: &str) -> (Vec<f64>, Dtype, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    let d = t.data();
    let v = match t.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::BOOL => d.iter().map(|&v| f64::from(v)).collect(),
        other => panic!("tensor {name}: unsupported dtype {other:?}"),
    };
    (v, t.dtype(), t.shape().to_vec())
}

/// `tests/fixtures/sched/manifest.json`.
pub fn sched_manifest() -> serde_json::Value {
    let p = path("sched/manifest.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    // Python's json writes non-finite numbers as bare tokens (e.g. `lambda_min_clipped: -Infinity`),
    // which strict JSON rejects; none of them is read by the tests.
    let text = text
        .replace("-Infinity", "null")
        .replace("Infinity", "null")
        .replace("NaN", "null");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// `tests/fixtures/ipsolvers/<name>` (a manifest of the official inverse-problem runs).
pub fn ipsolvers_manifest(name: &str) -> serde_json::Value {
    let p = path(&format!("ipsolvers/{name}"));
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// The analytic prior every ipsolvers run uses.
pub fn ipsolvers_gmm() -> diffinv::GmmDenoiser {
    let f = Fixture::open("ipsolvers/gmm.safetensors");
    let (means, shape) = f.f64("gmm.means");
    diffinv::GmmDenoiser::new(
        means,
        f.f64("gmm.stds").0,
        f.f64("gmm.weights").0,
        shape[1..].iter().product(),
        diffinv::NoiseSchedule::ddpm_linear(),
    )
    .expect("valid mixture")
}

/// The C-ΠGDM settings of a run: its manifest entry's `meta.run` and the file's grid.
pub fn cpgdm_config(meta: &serde_json::Value, f: &Fixture) -> diffinv::guidance::CpgdmConfig {
    let (t_rev, _) = f.f64("t_rev");
    let run = &meta["run"];
    let steps = run["steps"].as_u64().expect("steps") as usize;
    diffinv::guidance::CpgdmConfig {
        steps,
        w: run["w"].as_f64().expect("w"),
        lambda: run["lam"].as_f64().expect("lam"),
        t_start: t_rev[0],
        t_end: t_rev[steps],
        eps_num: run["num_eps"].as_f64().expect("num_eps"),
        sigma_y: run["sigma_y"].as_f64().unwrap_or(0.0),
        method: match run["algo"].as_str() {
            Some("pgdm_cont") => diffinv::guidance::Method::PgdmContinuous,
            _ => diffinv::guidance::Method::Cpgdm,
        },
        // The official noisy C-ΠGDM and continuous ΠGDM start inpainting from
        // pure noise (docs/math.md §6.3).
        start: match (run["algo"].as_str(), run["deg"].as_str()) {
            (Some("ncpgdm" | "pgdm_cont"), Some(deg)) if deg.starts_with("inp") => {
                diffinv::guidance::Start::PureNoise
            }
            _ => diffinv::guidance::Start::PseudoInverse,
        },
        ..diffinv::guidance::CpgdmConfig::default()
    }
}

/// The operator a run names (`meta.operator.class`), on backend `b`.
pub fn ipsolvers_operator<B: diffinv::Ops>(
    b: &B,
    meta: &serde_json::Value,
    f: &Fixture,
    item: diffinv::Shape,
) -> diffinv::ops::Operator<B> {
    use diffinv::ops::Operator;
    match meta["operator"]["class"].as_str().expect("operator class") {
        "SuperResolution" => {
            // The ratio, or the one the degradation's name carries ("sr4").
            let ratio = meta["operator"]["ratio"]
                .as_u64()
                .map(|r| r as usize)
                .or_else(|| {
                    let deg = meta["operator"]["deg"].as_str()?;
                    deg.strip_prefix("sr")?.parse().ok()
                })
                .expect("ratio");
            Operator::avg_pool(b, item, ratio).expect("pooling operator")
        }
        "Inpainting" => {
            let mask: Vec<f32> = f.f64("op/mask").0.iter().map(|&v| v as f32).collect();
            Operator::inpaint(b, item, &mask, true).expect("inpainting operator")
        }
        other => panic!("operator class {other} is not handled by the replays"),
    }
}

/// The official ΔΦ of step `n` of a C-ΠGDM run (differences of its Φ tables;
/// the noisy terms from `Phi_c` where the file has it, else 0), or of a
/// continuous-ΠGDM run (its one table `Phi`, the ε term).
pub fn official_delta_phi(f: &Fixture, n: usize) -> diffinv::guidance::cpgdm::DeltaPhi {
    if f.has("Phi") {
        let (phi, _) = f.f64("Phi");
        return diffinv::guidance::cpgdm::DeltaPhi {
            y: 0.0,
            s1: phi[n + 1] - phi[n],
            s2: 0.0,
            j1: 0.0,
            j2: 0.0,
            yc: 0.0,
            sc: 0.0,
            jc: 0.0,
        };
    }
    let (phi_y, _) = f.f64("Phi_y");
    let (phi_s, _) = f.f64("Phi_s");
    let (phi_j, _) = f.f64("Phi_j");
    let pair = |t: &[f64], k: usize| t[2 * (n + 1) + k] - t[2 * n + k];
    let (yc, sc, jc) = if f.has("Phi_c") {
        let (c, _) = f.f64("Phi_c");
        let d = |k: usize| c[3 * (n + 1) + k] - c[3 * n + k];
        (d(0), d(1), d(2))
    } else {
        (0.0, 0.0, 0.0)
    };
    diffinv::guidance::cpgdm::DeltaPhi {
        y: phi_y[n + 1] - phi_y[n],
        s1: pair(&phi_s, 0),
        s2: pair(&phi_s, 1),
        j1: pair(&phi_j, 0),
        j2: pair(&phi_j, 1),
        yc,
        sc,
        jc,
    }
}

/// Every `tests/fixtures/unet_*/` folder (a diffusers `UNet2DModel` each), sorted,
/// then the folders listed in `DIFFINV_UNET_FIXTURES` (a path list: checkpoints too
/// large to ship, e.g. from `tools/peer_unet.py --save`); at least one exists.
pub fn unet_folders() -> Vec<PathBuf> {
    let root = path("");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("unet_"))
        })
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no tests/fixtures/unet_* folder");
    if let Some(extra) = std::env::var_os("DIFFINV_UNET_FIXTURES") {
        dirs.extend(std::env::split_paths(&extra));
    }
    dirs
}
