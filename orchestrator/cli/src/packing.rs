//! `trials_per_gpu: auto`: how many of a sweep's trials share one GPU, from a short calibration run
//! of each distinct model shape on the sweep's first GPU (peak memory, throughput), cached by shape
//! and device. A trial predicted not to fit on the GPU even alone is refused before any trial starts.
//!
//! The rule (each trial also pays [`CONTEXT_BYTES`] for its own process's CUDA context):
//! * memory: `floor(USABLE_FRACTION · memory / (peak + context))` for the largest trial;
//! * compute, when the GPU's dense bf16 peak is known ([`peak_flops`]): a trial that reaches a
//!   fraction `u` of it alone shares the GPU with `ceil(TARGET_UTILISATION / u)` trials at most
//!   (one that nearly saturates the GPU gains nothing from company);
//! * at most [`MAX_AUTO`], at least 1.

use anyhow::{Context, Result, bail};
use mixsweep_sweep::Trial;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// Memory each trial's process needs besides MLX's own peak (CUDA context, cuBLAS workspaces).
pub const CONTEXT_BYTES: u64 = 512 << 20;
/// The share of a GPU's memory the packed trials may plan to use.
pub const USABLE_FRACTION: f64 = 0.9;
/// The share of the GPU's peak FLOP/s that packing aims for.
pub const TARGET_UTILISATION: f64 = 0.5;
pub const MAX_AUTO: usize = 8;
/// Steps of a calibration run (the first compiles; peak memory and throughput come from the rest).
const CALIBRATION_STEPS: usize = 4;

/// A GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
}

/// The GPUs of this machine (`nvidia-smi --query-gpu`).
pub fn query_gpus() -> Result<Vec<Gpu>> {
    let o = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .context("running nvidia-smi (trials_per_gpu: auto needs it to size the GPUs)")?;
    if !o.status.success() {
        bail!(
            "nvidia-smi failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let bad = || anyhow::anyhow!("unexpected nvidia-smi line {l:?}");
            let [index, name, mib] = f[..] else {
                return Err(bad());
            };
            Ok(Gpu {
                index: index.parse().map_err(|_| bad())?,
                name: name.to_string(),
                memory_bytes: mib.parse::<u64>().map_err(|_| bad())? << 20,
            })
        })
        .collect()
}

/// Dense bf16 peak FLOP/s of known GPU models (for the compute rule).
pub fn peak_flops(name: &str) -> Option<f64> {
    const TABLE: &[(&str, f64)] = &[
        ("B200", 2250e12),
        ("H200", 989e12),
        ("H100", 989e12),
        ("A100", 312e12),
        ("L40S", 362e12),
        ("L4", 121e12),
        ("A10", 125e12),
        ("4090", 165e12),
    ];
    TABLE
        .iter()
        .find(|(k, _)| name.contains(k))
        .map(|&(_, f)| f)
}

/// What a calibration run measured for one model shape on one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    pub peak_bytes: u64,
    pub tok_s: f64,
    /// Training FLOPs per token (the runner's count).
    pub flops_per_token: f64,
}

/// Training fields that change the numbers but not the memory or the speed of a step.
fn memory_neutral(key: &str) -> bool {
    key == "seed"
        || key == "steps"
        || [
            "lr", "warmup", "decay", "every", "clip", "beta", "eps", "momentum", "hold", "cooldown",
        ]
        .iter()
        .any(|w| key.contains(w))
}

/// The shape key of a trial's config: the config without memory-neutral training fields.
pub fn shape_key(config: &serde_json::Value) -> String {
    let mut c = config.clone();
    if let Some(t) = c.get_mut("training").and_then(|t| t.as_object_mut()) {
        t.retain(|k, _| !memory_neutral(k));
    }
    if let Some(o) = c.as_object_mut() {
        o.remove("name");
    }
    let digest = Sha256::digest(c.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The decision for a sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub trials_per_gpu: usize,
    pub gpu: String,
    pub gpu_memory_bytes: u64,
    /// The largest trial's peak memory and its throughput alone.
    pub peak_bytes: u64,
    pub tok_s: f64,
    pub reason: String,
}

/// Trials per GPU for these measurements on `gpu`; an error names what does not fit.
pub fn decide(gpu: &Gpu, measured: &[(String, Measured)]) -> Result<Decision> {
    let usable = gpu.memory_bytes as f64 * USABLE_FRACTION;
    let need = |m: &Measured| (m.peak_bytes + CONTEXT_BYTES) as f64;
    let too_big: Vec<String> = measured
        .iter()
        .filter(|(_, m)| need(m) > usable)
        .map(|(who, m)| {
            format!(
                "{who}: peak {:.2} GB + {:.1} GB context > {:.1} GB usable",
                m.peak_bytes as f64 / 1e9,
                CONTEXT_BYTES as f64 / 1e9,
                usable / 1e9
            )
        })
        .collect();
    if !too_big.is_empty() {
        bail!(
            "{} trial(s) would not fit on {} ({:.1} GB) even alone:\n  {}\n  lower training.batch_tokens (or the model size) for them, or run on a bigger GPU",
            too_big.len(),
            gpu.name,
            gpu.memory_bytes as f64 / 1e9,
            too_big.join("\n  ")
        );
    }
    let Some((_, big)) = measured
        .iter()
        .max_by(|a, b| a.1.peak_bytes.cmp(&b.1.peak_bytes))
    else {
        bail!("no trial was calibrated");
    };
    let by_memory = (usable / need(big)).floor() as usize;
    let util = measured
        .iter()
        .map(|(_, m)| m.tok_s * m.flops_per_token)
        .fold(0.0, f64::max)
        / peak_flops(&gpu.name).unwrap_or(f64::INFINITY);
    let by_compute = if util > 0.0 {
        (TARGET_UTILISATION / util).ceil() as usize
    } else {
        MAX_AUTO
    };
    let n = by_memory.min(by_compute).clamp(1, MAX_AUTO);
    let why = if n == MAX_AUTO && by_memory >= MAX_AUTO && by_compute >= MAX_AUTO {
        format!("the cap of {MAX_AUTO}")
    } else if by_memory <= by_compute {
        format!("memory: {by_memory} fit")
    } else {
        format!(
            "compute: one trial reaches {:.0}% of the GPU's peak",
            util * 100.0
        )
    };
    Ok(Decision {
        trials_per_gpu: n,
        gpu: gpu.name.clone(),
        gpu_memory_bytes: gpu.memory_bytes,
        peak_bytes: big.peak_bytes,
        tok_s: big.tok_s,
        reason: why,
    })
}

/// Where calibrations are kept: one JSON file per (shape, runner, device).
fn cache_file(key: &str, runner_version: &str, gpu: &Gpu) -> std::path::PathBuf {
    let id = format!("{key}|{runner_version}|{}|{}", gpu.name, gpu.memory_bytes);
    let digest = Sha256::digest(id.as_bytes());
    let name: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    mixsweep_store::default_cache_dir()
        .join("calibration")
        .join(format!("{name}.json"))
}

/// The runner's `--version` line (calibrations are per runner build).
pub fn runner_version(runner: &Path) -> String {
    std::process::Command::new(runner)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A cached calibration of this shape on this device, if any.
pub fn cached(key: &str, runner_version: &str, gpu: &Gpu) -> Option<Measured> {
    let text = std::fs::read_to_string(cache_file(key, runner_version, gpu)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs `trial` (of shape `key`) for a few steps on `gpu` and reads its summary; keeps the result
/// in the cache.
async fn calibrate(
    runner: &Path,
    trial: &Trial,
    key: &str,
    gpu: &Gpu,
    runner_version: &str,
) -> Result<Measured> {
    let dir = tempfile::Builder::new()
        .prefix("mixsweep-calibration-")
        .tempdir()
        .context("creating a folder for the calibration run")?;
    let config = dir.path().join("config.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&trial.config())?)?;
    let out = dir.path().join("out");
    let mut cmd = tokio::process::Command::new(runner);
    cmd.arg("train")
        .arg("--config")
        .arg(&config)
        .args(["--train", trial.train()])
        .args(["--steps", &CALIBRATION_STEPS.to_string(), "--quiet"])
        .arg("--out")
        .arg(&out)
        .kill_on_drop(true);
    if let Some(v) = trial.val() {
        cmd.args(["--val", v]);
    }
    crate::backend::local::device_env(&mut cmd, Some(gpu.index));
    // a cold kernel cache compiles for minutes on a fresh machine
    let o = tokio::time::timeout(Duration::from_secs(1800), cmd.output())
        .await
        .context("the calibration run took over 30 minutes")?
        .with_context(|| format!("starting {}", runner.display()))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the calibration run of trial {} ({}) failed ({}):\n  {}\n  set trials_per_gpu to a number to skip calibration",
            trial.id.as_str(),
            trial.variant(),
            o.status,
            tail.join("\n  ")
        );
    }
    let summary: mixsweep_artifacts::Summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)
            .context("reading the calibration run's summary.json")?;
    let m = Measured {
        peak_bytes: summary.peak_memory_bytes as u64,
        tok_s: summary.mean_tok_s,
        flops_per_token: summary.flops_per_token,
    };
    let file = cache_file(key, runner_version, gpu);
    if let Some(parent) = file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // written under a temporary name and renamed: concurrent runs never read half a file
    let tmp = file.with_extension(format!("{}.tmp", std::process::id()));
    let kept =
        std::fs::write(&tmp, serde_json::to_vec(&m)?).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = kept {
        // only costs a calibration run next time
        eprintln!(
            "warning: could not keep the calibration in {}: {e}",
            file.display()
        );
    }
    Ok(m)
}

/// What each model shape measured, by [`shape_key`].
pub type Shapes = std::collections::HashMap<String, Measured>;

/// `trials_per_gpu: auto`: calibrates (or reads the cached calibration of) every model shape of
/// the sweep on its first GPU and stores the decision beside the sweep (`packing.json`).
pub async fn for_run(
    backend: &crate::backend::Backend,
    gpu_ids: &[usize],
    sweep: &mixsweep_sweep::Sweep,
    runner: &std::path::Path,
    storage: &crate::storage::Storage,
    quiet: bool,
) -> Result<(usize, Option<Shapes>)> {
    if !matches!(backend, crate::backend::Backend::Local { .. }) {
        anyhow::bail!(
            "{}: trials_per_gpu: auto calibrates with the local runner; with the {} backend set a number",
            sweep.spec.name,
            backend.name()
        );
    }
    let Some(&first) = gpu_ids.first() else {
        if !quiet {
            eprintln!(
                "note: trials_per_gpu: auto has no GPU to pack (no GPU slots); one trial at a time"
            );
        }
        return Ok((1, None));
    };
    let gpus = query_gpus()?;
    let Some(gpu) = gpus.iter().find(|g| g.index == first) else {
        anyhow::bail!(
            "GPU {first} is not among the GPUs nvidia-smi lists ({} found)",
            gpus.len()
        );
    };
    let log = |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    let (d, shapes) = plan(runner, &sweep.trials, gpu, &log)
        .await
        .with_context(|| format!("sweep {}: trials_per_gpu: auto", sweep.spec.name))?;
    log(format!(
        "trials_per_gpu auto: {} per GPU on {} ({:.0} GB): peak {:.2} GB and {:.0} tok/s per trial alone; bound by {}",
        d.trials_per_gpu,
        d.gpu,
        d.gpu_memory_bytes as f64 / 1e9,
        d.peak_bytes as f64 / 1e9,
        d.tok_s,
        d.reason
    ));
    storage
        .put(
            &format!("sweeps/{}/packing.json", sweep.spec.name),
            serde_json::to_vec_pretty(&d)?,
        )
        .await?;
    Ok((d.trials_per_gpu, Some(shapes)))
}

/// The distinct shapes among `trials` (key, first trial of that shape), in sweep order.
fn distinct_shapes(trials: &[Trial]) -> Vec<(String, &Trial)> {
    let mut seen = std::collections::HashSet::new();
    trials
        .iter()
        .filter_map(|t| {
            let key = shape_key(&t.config());
            seen.insert(key.clone()).then_some((key, t))
        })
        .collect()
}

/// Calibrates every distinct shape among `trials` on `gpu` (one run each, cached) and decides.
pub async fn plan(
    runner: &Path,
    trials: &[Trial],
    gpu: &Gpu,
    log: &dyn Fn(String),
) -> Result<(Decision, Shapes)> {
    let version = runner_version(runner);
    let shapes = distinct_shapes(trials);
    let mut measured = vec![];
    for (i, (key, t)) in shapes.iter().enumerate() {
        let m = match cached(key, &version, gpu) {
            Some(m) => m,
            None => {
                log(format!(
                    "trials_per_gpu auto: calibrating shape {}/{} (trial {}, {}) on GPU {}",
                    i + 1,
                    shapes.len(),
                    t.id.as_str(),
                    t.variant(),
                    gpu.index
                ));
                calibrate(runner, t, key, gpu, &version).await?
            }
        };
        let who = format!("trial {} ({})", t.id.as_str(), t.variant());
        measured.push((who, m));
    }
    let decision = decide(gpu, &measured)?;
    let shapes = shapes
        .iter()
        .zip(measured)
        .map(|((k, _), (_, m))| (k.clone(), m))
        .collect();
    Ok((decision, shapes))
}

/// Orders trials longest first (stable), so that trials sharing GPUs do not leave the longest ones
/// to run last with the GPU half idle: by calibrated time (`steps x batch_tokens / tok/s` of the
/// trial's shape) where `shapes` has it, else by training FLOPs.
pub fn longest_first(trials: &mut [Trial], shapes: Option<&Shapes>) {
    let cost = |t: &Trial| {
        let config = t.config();
        let batch = config["training"]["batch_tokens"].as_f64().unwrap_or(1.0);
        let tokens = t.steps as f64 * batch;
        let measured = shapes.and_then(|s| s.get(&shape_key(&config)));
        match measured {
            Some(m) if m.tok_s > 0.0 => (1, tokens / m.tok_s),
            _ => (0, tokens * t.flops_per_token),
        }
    };
    let mut keyed: Vec<((i32, f64), Trial)> = trials.iter().map(|t| (cost(t), t.clone())).collect();
    // calibrated trials first (their estimate is in seconds), each group longest first
    keyed.sort_by(|a, b| b.0.0.cmp(&a.0.0).then(b.0.1.total_cmp(&a.0.1)));
    for (slot, (_, t)) in trials.iter_mut().zip(keyed) {
        *slot = t;
    }
}

/// `plan`'s line for `trials_per_gpu: auto`: the decision if every shape is calibrated on this
/// machine's first GPU, else what the run will calibrate.
pub fn plan_line(runner: &Path, trials: &[Trial]) -> String {
    let keys = distinct_shapes(trials);
    let gpu = match query_gpus() {
        Ok(g) if !g.is_empty() => g[0].clone(),
        _ => {
            return "trials_per_gpu: auto (no GPU here: calibrated when the run starts on one)"
                .into();
        }
    };
    let version = runner_version(runner);
    let measured: Option<Vec<(String, Measured)>> = keys
        .iter()
        .map(|(k, t)| cached(k, &version, &gpu).map(|m| (format!("trial {}", t.id.as_str()), m)))
        .collect();
    match measured.map(|m| decide(&gpu, &m)) {
        Some(Ok(d)) => format!(
            "trials_per_gpu: auto -> {} per GPU on {} (cached calibration; bound by {})",
            d.trials_per_gpu, d.gpu, d.reason
        ),
        Some(Err(e)) => format!("trials_per_gpu: auto -> the run will refuse: {e}"),
        None => format!(
            "trials_per_gpu: auto ({} model shape(s) to calibrate when the run starts: {CALIBRATION_STEPS} steps each on {})",
            keys.len(),
            gpu.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, gib: u64) -> Gpu {
        Gpu {
            index: 0,
            name: name.into(),
            memory_bytes: gib << 30,
        }
    }

    fn m(peak_gib: f64, tok_s: f64, flops: f64) -> (String, Measured) {
        let peak_bytes = (peak_gib * (1u64 << 30) as f64) as u64;
        (
            "t".into(),
            Measured {
                peak_bytes,
                tok_s,
                flops_per_token: flops,
            },
        )
    }

    #[test]
    fn memory_compute_and_the_cap_each_bound_the_packing() {
        let h200 = gpu("NVIDIA H200", 141);
        // gqa_shakespeare as measured (2.09M tok/s, ~60 MFLOP/token, ~1.4 GB): 13% of peak -> 4
        let d = decide(&h200, &[m(1.4, 2.09e6, 6.0e7)]).unwrap();
        assert_eq!(d.trials_per_gpu, 4, "{d:?}");
        assert!(d.reason.starts_with("compute"), "{d:?}");
        // 40 GB each: (141 * 0.9) / 40.5 -> 3 by memory
        let d = decide(&h200, &[m(40.0, 1e5, 1e8)]).unwrap();
        assert_eq!(d.trials_per_gpu, 3);
        assert!(d.reason.starts_with("memory"), "{d:?}");
        // tiny and slow: the cap
        assert_eq!(
            decide(&h200, &[m(0.1, 1e5, 1e6)]).unwrap().trials_per_gpu,
            MAX_AUTO
        );
        // an unknown GPU: memory only; the largest trial decides
        let d = decide(&gpu("Fake", 4), &[m(0.2, 1e9, 1e9), m(1.0, 1.0, 1.0)]).unwrap();
        assert_eq!(d.trials_per_gpu, 2, "{d:?}");
    }

    #[test]
    fn a_trial_that_does_not_fit_alone_is_refused_with_its_numbers() {
        let e = decide(&gpu("Fake", 8), &[m(1.0, 1.0, 1.0), m(7.5, 1.0, 1.0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 trial(s) would not fit on Fake"), "{e}");
        assert!(e.contains("peak 8.05 GB"), "{e}");
        assert!(e.contains("lower training.batch_tokens"), "{e}");
    }

    fn trial(dim: usize, steps: usize) -> Trial {
        let config = serde_json::json!({"model_dim": dim, "vocab_size": 32, "seq_len": 8,
            "blocks": [{"type": "swiglu"}],
            "training": {"batch_tokens": 16, "seed": 1, "steps": steps}});
        Trial::from_config(config, "base", "data/train_*.bin", None, "test").unwrap()
    }

    #[test]
    fn longest_trials_start_first_by_calibrated_time_else_by_flops() {
        let (a, b, c) = (trial(16, 10), trial(16, 100), trial(32, 20));
        let mut order = vec![a.clone(), b.clone(), c.clone()];
        longest_first(&mut order, None);
        // FLOPs: b (16 wide, 100 steps) > c (32 wide, 20 steps) > a
        let ids = |v: &[Trial]| v.iter().map(|t| t.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&order), ids(&[b.clone(), c.clone(), a.clone()]));
        // calibrated: the 32-wide shape is 100x slower per token, so c is the longest
        let mut shapes = Shapes::new();
        let m = |tok_s| Measured {
            peak_bytes: 1,
            tok_s,
            flops_per_token: 1.0,
        };
        shapes.insert(shape_key(&a.config()), m(1000.0));
        shapes.insert(shape_key(&c.config()), m(10.0));
        longest_first(&mut order, Some(&shapes));
        assert_eq!(ids(&order), ids(&[c, b, a]));
    }

    #[test]
    fn the_shape_key_ignores_seeds_and_learning_rates_but_not_batch_or_width() {
        let c = serde_json::json!({"name": "a", "model_dim": 64,
            "training": {"seed": 1, "lr": 0.001, "warmup_steps": 5, "batch_tokens": 1024}});
        let mut same = c.clone();
        same["name"] = "b".into();
        same["training"]["seed"] = 2.into();
        same["training"]["lr"] = 0.01.into();
        same["training"]["warmup_steps"] = 9.into();
        assert_eq!(shape_key(&c), shape_key(&same));
        let mut batch = c.clone();
        batch["training"]["batch_tokens"] = 2048.into();
        assert_ne!(shape_key(&c), shape_key(&batch));
        let mut wide = c.clone();
        wide["model_dim"] = 128.into();
        assert_ne!(shape_key(&c), shape_key(&wide));
    }
}
