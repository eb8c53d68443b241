//! `diffinv restore` end to end on a 32×32 crop of a held-out photograph with
//! the bundled demo model: every task × method writes its four images at the
//! right sizes and reports finite metrics; seeded runs are bit-for-bit
//! reproducible; every method beats the H⁺y baseline on SR, both inpaintings
//! and (but C-ΠGDM) colorization, where the demo prior is good enough to
//! ([`least_gain`]), also with the device network in f16 on wgpu; the final
//! projection keeps the measured pixels;
//! bad input is a one-line error with nothing written; two restores on two
//! threads sharing a backend equal two sequential ones.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diffinv::ops::nn::NnOps;
use diffinv::DType;

const CROP: &str = "tests/fixtures/restore/astronaut_crop32.png";
const TASKS: [&str; 5] = ["sr4", "inpaint-box", "inpaint-random", "colorize", "deblur"];
const METHODS: [&str; 4] = ["cpigdm", "pigdm", "dps", "dds"];

fn diffinv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffinv"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running diffinv")
}

/// A fresh, empty output folder for one test case.
fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diffinv-restore-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn png_size(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Run a restore of the crop with `--json`; returns the report and the
/// output folder.
/// A report's PSNR gain of the restoration over H⁺y, in dB.
fn gain_over_baseline(report: &serde_json::Value) -> f64 {
    report["psnr_restored"].as_f64().unwrap() - report["psnr_baseline"].as_f64().unwrap()
}

fn restore(name: &str, extra: &[&str]) -> (serde_json::Value, PathBuf) {
    restore_image(name, CROP, extra)
}

fn restore_image(name: &str, image: &str, extra: &[&str]) -> (serde_json::Value, PathBuf) {
    let out = out_dir(name);
    let out_s = out.to_str().unwrap().to_string();
    let mut args = vec!["restore", "--image", image, "--out", &out_s, "--json"];
    args.extend_from_slice(extra);
    let o = diffinv(&args);
    assert!(
        o.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    (report, out)
}

#[test]
fn every_task_and_method_writes_its_images_on_cpu() {
    every_task_and_method_writes_its_images("cpu");
}

/// The same on wgpu (lavapipe here) with the network on the device too.
#[test]
fn every_task_and_method_writes_its_images_on_wgpu() {
    if common::wgpu(false).is_some() {
        every_task_and_method_writes_its_images("wgpu");
    }
}

/// The device network in f16 storage on wgpu, where the adapter has
/// SHADER_F16 (lavapipe does): it restores as the f32 one does.
#[test]
fn the_device_network_restores_in_f16_on_wgpu() {
    let Some(backend) = common::wgpu(false) else {
        return;
    };
    let args = [
        "--task",
        "sr4",
        "--backend",
        "wgpu",
        "--network",
        "device",
        "--dtype",
        "f16",
    ];
    if !backend.nn_supports(DType::F16) {
        let out = out_dir("f16-refused");
        let mut all = vec!["restore", "--image", CROP, "--out", out.to_str().unwrap()];
        all.extend_from_slice(&args);
        assert_fails("f16 device network without SHADER_F16", &all, &out);
        return;
    }
    let (r, out) = restore("wgpu-f16-device", &args);
    assert_eq!(
        (r["network_on"].as_str(), r["dtype"].as_str()),
        (Some("wgpu"), Some("f16"))
    );
    let gain = gain_over_baseline(&r);
    assert!(gain > 0.5, "gains only {gain:.2} dB over H⁺y");
    let _ = std::fs::remove_dir_all(out);
}

fn every_task_and_method_writes_its_images(backend: &str) {
    let network = if backend == "cpu" { "cpu" } else { "device" };
    for task in TASKS {
        for method in METHODS {
            let name = format!("{backend}-{task}-{method}");
            let args = [
                "--task",
                task,
                "--method",
                method,
                "--backend",
                backend,
                "--network",
                network,
            ];
            let (r, out) = restore(&name, &args);
            assert_eq!(r["backend"], backend, "{name}");
            assert_eq!(r["network_on"], backend, "{name}: where the network ran");
            for key in [
                "seconds_network",
                "psnr_baseline",
                "psnr_restored",
                "ssim_baseline",
                "ssim_restored",
                "seconds",
            ] {
                assert!(
                    r[key].as_f64().is_some_and(f64::is_finite),
                    "{name}: {key} = {}",
                    r[key]
                );
            }
            assert_eq!(r["nfe"], 5, "{name}: 5 steps, Jacobian dropped");
            let share = r["share_outside_network"].as_f64().unwrap();
            assert!(
                (0.0..1.0).contains(&share),
                "{name}: share outside the network {share}"
            );
            let degraded = if task == "sr4" { (8, 8) } else { (32, 32) };
            assert_eq!(png_size(&out.join("degraded.png")), degraded, "{name}");
            assert_eq!(png_size(&out.join("baseline.png")), (32, 32), "{name}");
            assert_eq!(png_size(&out.join("restored.png")), (32, 32), "{name}");
            assert_eq!(
                png_size(&out.join("compare.png")),
                (3 * 32 + 8, 32),
                "{name}"
            );
            let gain = gain_over_baseline(&r);
            if let Some(least) = least_gain(task, method) {
                assert!(gain > least, "{name}: gains only {gain:.2} dB over H⁺y");
            }
            let _ = std::fs::remove_dir_all(out);
        }
    }
}

/// The PSNR gain over H⁺y that a task × method must beat on the crop at 5
/// steps, where the demo prior is good enough to help (measured: +1.2…+6.3 dB
/// on SR and the inpaintings, +0.17 for DPS on the box, +0.6…+0.8 for ΠGDM,
/// DPS and DDS on colorization; BENCHMARKS.md). None: deblurring, where one
/// sample's fill of the blur's null space costs 0.6–1.7 dB (the mean of
/// several gains: [`the_mean_of_samples_beats_h_pinv_y_where_one_sample_does_not`]),
/// and C-ΠGDM's colorization of this crop (−1.6 dB; its mean of 8 gains
/// from a lower start, same test).
fn least_gain(task: &str, method: &str) -> Option<f64> {
    match (task, method) {
        ("deblur", _) | ("colorize", "cpigdm") => None,
        ("inpaint-box", "dps") => Some(0.1),
        _ => Some(0.5),
    }
}

/// Where one posterior sample loses to H⁺y — deblurring, whose null space
/// holds fine detail the demo prior barely knows, and C-ΠGDM's colorization
/// of this crop (below) — the mean of 8 samples
/// (`--samples 8`, an estimate of the posterior mean, which PSNR rewards)
/// beats it with every method (measured on the crop: C-ΠGDM +0.49 dB, ΠGDM
/// +0.59, DPS +0.12, DDS +0.34; one sample: −0.6 … −1.7). The samples run
/// as one batch: same NFE, and `--samples 1` is the single-sample run.
#[test]
fn the_mean_of_samples_beats_h_pinv_y_where_one_sample_does_not() {
    for method in METHODS {
        let args = ["--task", "deblur", "--method", method, "--samples", "8"];
        let (r, out) = restore(&format!("mean-deblur-{method}"), &args);
        let gain = gain_over_baseline(&r);
        assert!(gain > 0.05, "deblur {method}, mean of 8: {gain:+.2} dB");
        assert_eq!(r["samples"], 8);
        assert_eq!(r["nfe"], 5, "deblur {method}: the batch counts as one call");
        let _ = std::fs::remove_dir_all(out);
        // The batch through the wgpu kernels (lavapipe here) scores the same.
        if common::wgpu(false).is_some() {
            let wgpu = [&args[..], &["--backend", "wgpu"][..]].concat();
            let (w, out) = restore(&format!("mean-deblur-{method}-wgpu"), &wgpu);
            let (cpu, dev) = (&r["psnr_restored"], &w["psnr_restored"]);
            let diff = (cpu.as_f64().unwrap() - dev.as_f64().unwrap()).abs();
            assert!(
                diff < 0.01,
                "deblur {method}, mean of 8: cpu {cpu}, wgpu {dev}"
            );
            let _ = std::fs::remove_dir_all(out);
        }
    }
    // C-ΠGDM's colorization of this crop, the other pair whose one sample
    // loses (−1.6 dB): from τ0 = 400 the mean of 8 stays below H⁺y too
    // (−0.14; the full photos gain +0.4 at 4 samples), its samples' colours
    // spreading widely over 32×32 pixels; from τ0 = 200 it gains (+0.15).
    let args = [
        "--task",
        "colorize",
        "--method",
        "cpigdm",
        "--samples",
        "8",
        "--start",
        "200",
    ];
    let (r, out) = restore("mean-colorize-cpigdm", &args);
    let gain = gain_over_baseline(&r);
    assert!(
        gain > 0.05,
        "colorize cpigdm, mean of 8 from τ0 = 200: {gain:+.2} dB"
    );
    let _ = std::fs::remove_dir_all(out);
    let read = |tag: &str, extra: &[&str]| {
        let args = [&["--task", "deblur", "--method", "pigdm"][..], extra].concat();
        let (_, out) = restore(&format!("samples-one-{tag}"), &args);
        let bytes = std::fs::read(out.join("restored.png")).unwrap();
        let _ = std::fs::remove_dir_all(out);
        bytes
    };
    assert_eq!(read("default", &[]), read("one", &["--samples", "1"]));
}

/// With measurement noise (σ = 0.05), ΠGDM's noisy guidance weighs the
/// residual by how much of it is signal, and beats H⁺y on every task whose
/// operator has `H⁺(H⁺)ᵀ = q·P` (measured gains on the crop: +1.7 dB SR,
/// +0.9 box, +5.1 random, +0.7 colorization). Deblurring's separable
/// operator has no such q: the noisy guidance refuses it in one line, and
/// DPS and DDS take it — from an H⁺y whose truncation keeps the noise's
/// gain ≤ 1/(2σ), so the baseline is a blurred image, not noise.
#[test]
fn noisy_measurements_restore_or_refuse_in_one_line() {
    let noisy = ["--noise", "0.05"];
    for (task, least) in [
        ("sr4", 1.0),
        ("inpaint-box", 0.5),
        ("inpaint-random", 3.0),
        ("colorize", 0.3),
    ] {
        let args = [&["--task", task, "--method", "pigdm"][..], &noisy[..]].concat();
        let (r, out) = restore(&format!("noisy-{task}"), &args);
        let gain = gain_over_baseline(&r);
        assert!(gain >= least, "noisy {task}: {gain:+.2} dB");
        assert_eq!(r["project"], false, "noisy {task}: projected");
        let _ = std::fs::remove_dir_all(out);
    }
    for method in ["dps", "dds"] {
        let args = [&["--task", "deblur", "--method", method][..], &noisy[..]].concat();
        let (r, out) = restore(&format!("noisy-deblur-{method}"), &args);
        // The noiseless truncation gave a baseline of 6 dB on the bundled
        // astronaut at this σ; the noise-aware one gives 20.
        let baseline = r["psnr_baseline"].as_f64().unwrap();
        assert!(baseline > 15.0, "noisy deblur baseline {baseline:.2} dB");
        let _ = std::fs::remove_dir_all(out);
    }
    for method in ["cpigdm", "pigdm"] {
        let out = out_dir(&format!("noisy-deblur-{method}"));
        let o = out.to_str().unwrap();
        let args = [
            &["restore", "--image", CROP, "--out", o, "--task", "deblur"][..],
            &["--method", method][..],
            &noisy[..],
        ]
        .concat();
        assert_fails(&format!("noisy deblur by {method}"), &args, &out);
    }
}

/// The same seed twice gives the same restored.png, byte for byte, on each
/// backend; another seed does not.
#[test]
fn seeded_runs_are_reproducible() {
    let mut backends = vec!["cpu"];
    if common::wgpu(false).is_some() {
        backends.push("wgpu");
    }
    for backend in backends {
        for method in METHODS {
            let read = |tag: &str, seed: &str| {
                let name = format!("repro-{backend}-{method}-{tag}");
                let args = [
                    "--task",
                    "inpaint-random",
                    "--method",
                    method,
                    "--backend",
                    backend,
                    "--seed",
                    seed,
                ];
                let (_, out) = restore(&name, &args);
                let bytes = std::fs::read(out.join("restored.png")).unwrap();
                let _ = std::fs::remove_dir_all(out);
                bytes
            };
            let (a, b, c) = (read("a", "7"), read("b", "7"), read("c", "8"));
            assert_eq!(a, b, "{backend} {method}: same seed, different output");
            assert_ne!(a, c, "{backend} {method}: the seed changes nothing");
        }
    }
}

/// One line on stderr, a failing exit code, and no file in the output folder.
fn assert_fails(what: &str, args: &[&str], out: &Path) {
    let o = diffinv(args);
    assert!(!o.status.success(), "{what}: succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: stderr is not one line: {err}"
    );
    assert!(err.starts_with("diffinv: "), "{what}: {err}");
    let written = std::fs::read_dir(out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "{what}: files were written");
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let out = out_dir("bad");
    let o = out.to_str().unwrap();
    let tmp = std::env::temp_dir().join(format!("diffinv-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let corrupt = tmp.join("corrupt.png");
    std::fs::write(&corrupt, b"not a png at all").unwrap();
    let odd = tmp.join("odd.png");
    image::RgbImage::from_pixel(33, 30, image::Rgb([90, 120, 200]))
        .save(&odd)
        .unwrap();
    let no_config = tmp.join("empty-model");
    std::fs::create_dir_all(&no_config).unwrap();
    let blocker = tmp.join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let unwritable = blocker.join("out");
    let (corrupt, odd, no_config, unwritable) = (
        corrupt.to_str().unwrap(),
        odd.to_str().unwrap(),
        no_config.to_str().unwrap(),
        unwritable.to_str().unwrap(),
    );
    let cases: [(&str, Vec<&str>); 16] = [
        ("missing image", vec!["--image", "no/such.png"]),
        ("corrupt image", vec!["--image", corrupt]),
        ("unsupported size", vec!["--image", odd]),
        ("unknown task", vec!["--image", CROP, "--task", "denoise"]),
        ("unknown method", vec!["--image", CROP, "--method", "ddrm"]),
        ("steps 0", vec!["--image", CROP, "--steps", "0"]),
        ("samples 0", vec!["--image", CROP, "--samples", "0"]),
        ("samples 65", vec!["--image", CROP, "--samples", "65"]),
        (
            "model without config",
            vec!["--image", CROP, "--model", no_config],
        ),
        (
            "output not writable",
            vec!["--image", CROP, "--out", unwritable],
        ),
        ("unknown network", vec!["--image", CROP, "--network", "tpu"]),
        ("start 1", vec!["--image", CROP, "--start", "1"]),
        ("start 1000", vec!["--image", CROP, "--start", "1000"]),
        (
            "start below the steps",
            vec!["--image", CROP, "--start", "3", "--steps", "5"],
        ),
        (
            "unknown projection",
            vec!["--image", CROP, "--project", "maybe"],
        ),
        // The cpu backend runs the CPU network.
        (
            "device network on cpu",
            vec!["--image", CROP, "--network", "device"],
        ),
    ];
    for (what, extra) in cases {
        let mut args = vec!["restore", "--backend", "cpu"];
        if !extra.contains(&"--out") {
            args.extend_from_slice(&["--out", o]);
        }
        args.extend_from_slice(&extra);
        assert_fails(what, &args, &out);
    }
    // The unsupported size works once cropped or padded.
    for fit in ["--crop", "--pad"] {
        let args = ["--backend", "cpu", fit, "--task", "inpaint-box"];
        let (r, dir) = restore_image(&format!("fit{fit}"), odd, &args);
        let want = if fit == "--crop" { (32, 28) } else { (36, 32) };
        assert_eq!(
            (
                r["width"].as_u64().unwrap() as u32,
                r["height"].as_u64().unwrap() as u32
            ),
            want
        );
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(tmp);
}

/// Two restores on two threads sharing one backend equal the same two run
/// one after the other.
#[test]
fn two_threads_sharing_a_backend_match_sequential_runs() {
    use diffinv::backend::cpu::CpuBackend;
    use diffinv::restore::{restore, Image, Method, RestoreConfig, Task};
    use diffinv::unet::UNet;
    let clean = crop_image();
    let model = demo_model();
    let configs = [
        RestoreConfig {
            task: Task::Sr4,
            method: Method::Cpgdm,
            seed: 1,
            ..RestoreConfig::default()
        },
        RestoreConfig {
            task: Task::InpaintRandom,
            method: Method::Dds,
            seed: 2,
            ..RestoreConfig::default()
        },
    ];
    let backend = CpuBackend::new();
    let run = |config: &RestoreConfig| {
        let mut net = UNet::load(&model, DType::F32).unwrap();
        restore(&backend, &mut net, &clean, config, |_| {})
            .unwrap()
            .restored
    };
    let sequential: Vec<Image> = configs.iter().map(run).collect();
    let parallel: Vec<Image> = std::thread::scope(|s| {
        let handles: Vec<_> = configs.iter().map(|c| s.spawn(|| run(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, parallel);
}

/// The test crop as a library image.
fn crop_image() -> diffinv::restore::Image {
    let img = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join(CROP))
        .unwrap()
        .to_rgb32f();
    let mut data = vec![0f32; 3 * 32 * 32];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * 1024 + p] = px.0[c];
        }
    }
    diffinv::restore::Image::new(32, 32, data).unwrap()
}

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-unet")
}

/// The final projection makes the restoration consistent with y: on random
/// inpainting every kept pixel (30 %) comes back as the clean value; without
/// it C-ΠGDM's and DPS's few steps leave them off.
#[test]
fn the_final_projection_keeps_the_measured_pixels() {
    use diffinv::backend::cpu::CpuBackend;
    use diffinv::restore::{restore, Method, RestoreConfig, Task};
    use diffinv::unet::UNet;
    let clean = crop_image();
    let backend = CpuBackend::new();
    let mut net = UNet::load(demo_model(), DType::F32).unwrap();
    for method in Method::ALL {
        let mut exact = |project: bool| {
            let config = RestoreConfig {
                task: Task::InpaintRandom,
                method,
                project,
                ..RestoreConfig::default()
            };
            let out = restore(&backend, &mut net, &clean, &config, |_| {}).unwrap();
            let hits = out
                .restored
                .data
                .iter()
                .zip(&clean.data)
                .filter(|(r, c)| (*r - *c).abs() <= 1e-6)
                .count();
            hits as f64 / clean.data.len() as f64
        };
        let (on, off) = (exact(true), exact(false));
        assert!(
            on >= 0.25,
            "{}: {on:.3} exact with the projection",
            method.name()
        );
        // ΠGDM's last update already sets P x to H⁺y, and so does DDS's
        // last CG solve of the normal equations; C-ΠGDM and DPS do not.
        if matches!(method, Method::Pgdm | Method::Dds) {
            assert!(off >= 0.25, "{}: {off:.3} exact without it", method.name());
        } else {
            assert!(off < 0.05, "{}: {off:.3} exact without it", method.name());
        }
    }
}

/// The library refuses a sample count outside 1…64 with a typed error, as the
/// CLI does, before it allocates anything.
#[test]
fn the_library_refuses_sample_counts_outside_the_batch_bound() {
    use diffinv::backend::cpu::CpuBackend;
    use diffinv::restore::{restore, RestoreConfig, MAX_SAMPLES};
    use diffinv::unet::UNet;
    use diffinv::Error;
    let clean = crop_image();
    let backend = CpuBackend::new();
    let mut net = UNet::load(demo_model(), DType::F32).unwrap();
    for samples in [0, MAX_SAMPLES + 1, usize::MAX] {
        let config = RestoreConfig {
            samples,
            ..RestoreConfig::default()
        };
        let result = restore(&backend, &mut net, &clean, &config, |_| {});
        assert!(
            matches!(
                result,
                Err(Error::InvalidParameter {
                    name: "samples",
                    ..
                })
            ),
            "samples = {samples}"
        );
    }
}
