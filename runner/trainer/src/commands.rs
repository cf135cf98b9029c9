//! What each `mixsweep-runner` command does with its arguments. Every command returns
//! `Err((exit code, message))`: 2 for input errors, 1 for runtime failures, 130 when interrupted.

use crate::cli::{DeviceArg, EvalArgs, GenerateArgs, HiddenstatsArgs, PrepareArgs, TrainArgs};

use mixsweep_runner::mlx_env::MlxEnv;
use mixsweep_runner::quantize::Scheme;
use mixsweep_runner::step_cache::StepCache;
use mixsweep_runner::train::{TrainError, TrainOptions, train};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub type Outcome = Result<(), (i32, String)>;

fn report(e: TrainError) -> (i32, String) {
    (e.exit_code(), e.to_string())
}

/// `step_cache`: a worker's compiled steps (`None` for a one-trial process).
pub fn run_train(
    a: TrainArgs,
    stop: Arc<AtomicBool>,
    mlx_env: &MlxEnv,
    step_cache: Option<Rc<StepCache>>,
) -> Outcome {
    let on_cpu = match a.device {
        DeviceArg::Cpu => true,
        DeviceArg::Gpu => false,
        DeviceArg::Auto => !mixsweep_mlx::device::gpu_available().unwrap_or(false),
    };
    if let Some(dir) = mlx_env.cpu_cache_cold().filter(|_| on_cpu) {
        // on stderr even with --quiet: otherwise a silent minute looks like a hang
        eprintln!(
            "note: the first steps compile MLX's CPU kernels with the C++ compiler (a minute or two, once \
             per machine); they are kept in {} for later runs",
            dir.display()
        );
    }
    memory_limits(&a).map_err(|e| (2, e))?;
    let out = match (&a.out, &a.artifacts) {
        (None, Some(_)) => {
            Some(std::env::temp_dir().join(format!("mixsweep-run-{}", std::process::id())))
        }
        _ => a.out.clone(),
    };
    let config =
        mixsweep_runner::remote::local_config(&a.config, out.as_deref()).map_err(|e| (2, e))?;
    if let (true, Some(url), Some(dir)) = (a.resume, &a.artifacts, &out) {
        mixsweep_runner::remote::fetch_resume(url, dir).map_err(|e| (1, e))?;
    }
    let profiler = match &a.cpuprofile {
        Some(_) => Some(
            pprof::ProfilerGuardBuilder::default()
                .frequency(499)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .map_err(|e| (1, format!("cannot start the CPU profiler: {e}")))?,
        ),
        None => None,
    };
    let opts = TrainOptions {
        config,
        train: a.train,
        val: a.val,
        out,
        steps: a.steps,
        safetensors_load: a.safetensors_load,
        safetensors_out: a.safetensors_out,
        device: a.device.device(),
        compute_dtype: a.compute_dtype.map(|c| c.dtype()),
        quiet: a.quiet,
        progress_json: a.progress_json,
        eval: a.eval,
        lut_dir: a.lut_dir,
        resume: a.resume,
        quantize: a.quantize.map(|b| Scheme::new(b, a.quant_method)),
        checkpoints: a.checkpoint_dir.zip(a.checkpoint_every.map(|n| n as usize)),
        stop,
        kernels_fetched: mlx_env.take_fetched(),
        step_cache,
    };
    let result = train(&opts).map(|_| ()).map_err(report);
    if let (Some(guard), Some(path)) = (profiler, &a.cpuprofile)
        && let Err(e) = write_profile(&guard, path)
    {
        eprintln!("error: writing the CPU profile {}: {e}", path.display());
    }
    let (Some(url), Some(out)) = (&a.artifacts, &opts.out) else {
        return result;
    };
    let files = mixsweep_runner::remote::Artifacts {
        config: &opts.config,
        out,
        weights: opts.safetensors_out.as_deref(),
        cpuprofile: a.cpuprofile.as_deref(),
    };
    match files.upload(url) {
        Ok(()) => result,
        Err(e) => {
            let before = result
                .as_ref()
                .err()
                .map(|r| format!("{}; ", r.1))
                .unwrap_or_default();
            Err((
                1,
                format!(
                    "{before}could not upload the artifacts to {url}: {e} (they are kept in {})",
                    out.display()
                ),
            ))
        }
    }
}

/// `--memory-limit`, `--cache-limit`: MLX's allocator limits, set before any allocation.
fn memory_limits(a: &TrainArgs) -> Result<(), String> {
    if let Some(m) = a.memory_limit {
        mixsweep_mlx::memory::set_memory_limit(m.as_u64() as usize)
            .map_err(|e| format!("--memory-limit: {e}"))?;
    }
    if let Some(c) = a.cache_limit {
        mixsweep_mlx::memory::set_cache_limit(c.as_u64() as usize)
            .map_err(|e| format!("--cache-limit: {e}"))?;
    }
    Ok(())
}

pub fn run_eval(a: EvalArgs) -> Outcome {
    let config = mixsweep_runner::remote::local_config(&a.config, None).map_err(|e| (2, e))?;
    let r = mixsweep_runner::train::evaluate_weights(&mixsweep_runner::train::EvalOptions {
        config: &config,
        weights: &a.safetensors_load,
        train: &a.train,
        val: a.val.as_deref(),
        lut_dir: a.lut_dir.as_deref(),
        device: a.device.device(),
        compute_dtype: a.compute_dtype.map(|c| c.dtype()),
        quantize: a.quantize.map(|b| Scheme::new(b, a.quant_method)),
    })
    .map_err(report)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
    } else {
        println!(
            "val_loss: {:.6} (nats/token, {} tokens)",
            r.val_loss, r.tokens
        );
        println!(
            "val_bpb:  {:.6} ({} bytes)",
            r.val_bpb.unwrap_or(f64::NAN),
            r.bytes.unwrap_or(0)
        );
    }
    Ok(())
}

pub fn run_generate(a: GenerateArgs) -> Outcome {
    use mixsweep_runner::generate::{GenerateOptions, Sampling, generate};
    use std::io::Write;
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        return Err((2, format!("--top-p {} must be in (0, 1]", a.top_p)));
    }
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        return Err((
            2,
            format!(
                "--temperature {} must be a finite number >= 0 (0 is greedy)",
                a.temperature
            ),
        ));
    }
    let opts = GenerateOptions {
        config: a.config,
        weights: a.safetensors_load,
        prompt: a.prompt,
        tokenizer: a.tokenizer,
        max_tokens: a.max_tokens,
        sampling: Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        },
        seed: a.seed,
        no_cache: a.no_cache,
        device: a.device.device(),
    };
    let mut out = std::io::stdout();
    let generated = generate(&opts, |piece| {
        let _ = out.write_all(piece.as_bytes()).and_then(|_| out.flush());
    })
    .map_err(report)?;
    println!();
    if a.ids {
        println!("{}", serde_json::json!({ "ids": generated }));
    }
    Ok(())
}

pub fn run_prepare(a: PrepareArgs, stop: Arc<AtomicBool>) -> Outcome {
    use mixsweep_runner::prepare::{PrepareOptions, TokenizerChoice, prepare};
    let tokenizer = match (a.byte_level, a.vocab_size, a.tokenizer_path) {
        (true, _, _) => TokenizerChoice::Bytes,
        (_, Some(v), _) => TokenizerChoice::TrainBpe { vocab_size: v },
        (_, _, Some(p)) => TokenizerChoice::Load(p),
        _ => unreachable!("clap requires one tokenizer choice"),
    };
    let opts = PrepareOptions {
        input: a.input,
        output: a.output.clone(),
        tokenizer,
        text_field: a.text_field,
        val_split: a.val_split,
        tokens_per_shard: a.tokens_per_shard,
        quiet: a.quiet,
        stop: stop.clone(),
    };
    match prepare(&opts) {
        Ok(p) => {
            println!(
                "wrote {} train tokens in {} shard(s) and {} val tokens in {} shard(s) to {} (vocab {})",
                p.train_tokens,
                p.train_shards,
                p.val_tokens,
                p.val_shards,
                a.output.display(),
                p.vocab_size
            );
            Ok(())
        }
        Err(e) if stop.load(Ordering::SeqCst) => Err((130, e)),
        Err(e) => Err((2, e)),
    }
}

/// Encodes the profile as pprof protobuf and writes it atomically.
fn write_profile(guard: &pprof::ProfilerGuard<'_>, path: &std::path::Path) -> anyhow::Result<()> {
    use pprof::protos::Message;
    let profile = guard.report().build()?.pprof()?;
    let mut buf = Vec::new();
    profile.encode(&mut buf)?;
    let tmp = path.with_extension("pb.partial");
    std::fs::write(&tmp, &buf)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn run_hiddenstats(a: HiddenstatsArgs) -> Outcome {
    use mixsweep_runner::hiddenstats::{HiddenOptions, hiddenstats};
    let o = HiddenOptions {
        config: a.config,
        weights: a.safetensors_load,
        train: a.train,
        out: a.out,
        device: a.device.device(),
    };
    let (dims, bytes) = hiddenstats(&o).map_err(report)?;
    println!("hidden state dims: {dims:?}");
    println!("wrote {} ({bytes} bytes)", o.out.display());
    Ok(())
}
