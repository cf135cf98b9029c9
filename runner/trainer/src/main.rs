//! `mixsweep-runner`: train one model config on MLX, count a config, check the MLX install, and
//! prepare byte-level data. Exit codes: 0 ok, 2 config/data errors (fix the input), 1 runtime
//! failures (including divergence), 130 interrupted.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mixsweep_mlx::device::Device;
use mixsweep_model::{ComputeDtype, ModelConfig};
use mixsweep_runner::train::{TrainError, TrainOptions, train};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "mixsweep-runner",
    version,
    about = "Train one model config on MLX (CPU, CUDA or Metal)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Float32,
    Bfloat16,
}

#[derive(Subcommand)]
enum Command {
    /// Train a config on token shards.
    Train {
        /// Model config: a JSON file, or an object-store URL (s3://, gs://, file://).
        #[arg(long)]
        config: String,
        /// Training shards: a glob like 'data/shakespeare_char/train_*.bin', or an object-store URL with a
        /// glob in the file name ('s3://bucket/data/train_*.bin'), downloaded once into $MIXSWEEP_CACHE.
        #[arg(long)]
        train: String,
        /// Validation shards, glob or URL (default: the train glob with `train` replaced by `val`).
        #[arg(long)]
        val: Option<String>,
        /// Output folder for metrics.jsonl, summary.json and weights (default runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override training.steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Start from these weights instead of a fresh init.
        #[arg(long)]
        safetensors_load: Option<PathBuf>,
        /// Where to write the final weights (default <out>/model.safetensors).
        #[arg(long)]
        safetensors_out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Override training.compute_dtype.
        #[arg(long, value_enum)]
        compute_dtype: Option<DtypeArg>,
        /// Print only errors.
        #[arg(long)]
        quiet: bool,
        /// Write a CPU profile of the whole run (pprof protobuf, for `go tool pprof` or speedscope).
        #[arg(long)]
        cpuprofile: Option<PathBuf>,
        /// Also upload config.json, metrics.jsonl, model.safetensors, cpu.pb and (last) summary.json
        /// to this storage URL (a folder, s3://bucket/prefix/trials/ID, gs://...). The local copies stay.
        #[arg(long)]
        artifacts: Option<String>,
        /// Print every metrics record as a JSON line on stdout (log-streaming backends read these).
        #[arg(long)]
        progress_json: bool,
        /// After training: loss over every validation token and bits per byte (into summary.json).
        #[arg(long)]
        eval: bool,
        /// BPB lookup tables (default: beside the validation shards).
        #[arg(long)]
        lut_dir: Option<PathBuf>,
        /// Continue from the resume point an interrupted run left (`resume.safetensors` in --out, or
        /// at the --artifacts URL): same weights, optimizer state and step; a fresh start when none.
        #[arg(long)]
        resume: bool,
    },
    /// Generate text from saved weights, streaming it as it is produced.
    Generate {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        safetensors_load: PathBuf,
        /// Text (encoded with --tokenizer, or bytes for vocab 256), or `token_ids:1,2,3`.
        #[arg(long)]
        prompt: String,
        /// The dataset's tokenizer.json, or its folder (needed unless vocab_size is 256).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[arg(long, default_value_t = 200)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
        temperature: f32,
        /// Keep the k most likely tokens (0 = all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Recompute the whole sequence for every token instead of using the KV cache / scan state.
        #[arg(long)]
        no_cache: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Print the generated token ids as JSON after the text.
        #[arg(long)]
        ids: bool,
    },
    /// Full validation loss and bits per byte of saved weights.
    Eval {
        #[arg(long)]
        config: String,
        #[arg(long)]
        safetensors_load: PathBuf,
        /// Training shards (the validation glob is derived from it, as in train).
        #[arg(long)]
        train: String,
        #[arg(long)]
        val: Option<String>,
        /// BPB lookup tables (default: beside the validation shards).
        #[arg(long)]
        lut_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        #[arg(long, value_enum)]
        compute_dtype: Option<DtypeArg>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Parameters, sizes, blocks, IR ops and FLOPs of a config (no MLX needed).
    Count {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the MLX install: version, device, and one tiny compiled train step.
    Smoke {
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
    },
    /// Text -> token shards, tokenizer.json, mixlab.dataset.json and the bits-per-byte lookup tables.
    #[command(group(clap::ArgGroup::new("tokenizer").required(true).args(["byte_level", "vocab_size", "tokenizer_path"])))]
    Prepare {
        /// A .txt file, a .jsonl file, or a folder of them (recursive).
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// One token per byte (vocab 256, no tokenizer).
        #[arg(long)]
        byte_level: bool,
        /// Train a byte-level BPE with this many tokens (at most 65535).
        #[arg(long)]
        vocab_size: Option<usize>,
        /// Reuse this tokenizer.json.
        #[arg(long)]
        tokenizer_path: Option<PathBuf>,
        /// The text field of .jsonl documents.
        #[arg(long, default_value = "text")]
        text_field: String,
        #[arg(long, default_value_t = 0.1)]
        val_split: f64,
        #[arg(long, default_value_t = 1_000_000)]
        tokens_per_shard: usize,
        #[arg(long)]
        quiet: bool,
    },
}

fn device(d: DeviceArg) -> Option<Device> {
    match d {
        DeviceArg::Auto => None,
        DeviceArg::Cpu => Some(Device::Cpu),
        DeviceArg::Gpu => Some(Device::Gpu),
    }
}

fn format_flops(f: f64) -> String {
    if f >= 1e12 {
        format!("{:.2} TFLOP", f / 1e12)
    } else if f >= 1e9 {
        format!("{:.2} GFLOP", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2} MFLOP", f / 1e6)
    } else {
        format!("{f:.0} FLOP")
    }
}

fn count(config: &std::path::Path, json: bool) -> Result<(), TrainError> {
    let cfg = ModelConfig::load(config)?;
    let counts = cfg.counts();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&counts).expect("counts serialize")
        );
        return Ok(());
    }
    let tokens = cfg.training.batch_tokens as f64;
    println!("Total parameters: {}", counts.params);
    println!(
        "Total size (float32, in MiB): {:.2}",
        counts.bytes_f32 as f64 / (1 << 20) as f64
    );
    println!("Number of blocks: {}", counts.blocks);
    println!("Number of weights: {}", counts.weights);
    println!("Number of IR ops: {}", counts.ir_ops);
    println!(
        "Forward FLOPs: {}",
        format_flops(counts.forward_flops_per_token * tokens)
    );
    println!(
        "Training step FLOPs: {}",
        format_flops(counts.train_flops_per_token * tokens)
    );
    println!(
        "FLOPs per token: {}",
        format_flops(counts.train_flops_per_token)
    );
    Ok(())
}

fn smoke(d: DeviceArg) -> anyhow::Result<()> {
    use mixsweep_runner::step::{OptimizerSpec, StepScalars, Steps, TrainState};
    println!("=== SMOKE: MLX ===");
    let version = mixsweep_mlx::version().context("reading the MLX version")?;
    let dev = mixsweep_mlx::device::select(device(d)).context("selecting the device")?;
    println!("PASS: MLX {version} available, device: {dev}");
    let cfg = ModelConfig::from_jsonc(
        r#"{"name":"smoke","model_dim":32,"vocab_size":64,"seq_len":16,
            "blocks":[{"type":"plain","heads":2},{"type":"swiglu"},{"type":"mamba","state_size":4}],
            "training":{"batch_tokens":64,"grad_clip":1,"seed":1}}"#,
    )?;
    let program = Arc::new(cfg.lower());
    let host = mixsweep_runner::init::initial_weights(&program.weights, 1);
    let params = mixsweep_runner::init::upload(&program.weights, &host)?;
    let mut state = TrainState::new(params)?;
    let mut steps = Steps::new(
        program.clone(),
        ComputeDtype::Float32,
        OptimizerSpec::new(&cfg, &program),
    )?;
    let tokens: Vec<i32> = (0..64).map(|i| i * 7 % 64).collect();
    let x = mixsweep_mlx::Array::from_i32(&tokens, &[4, 16])?;
    let y = mixsweep_mlx::Array::from_i32(
        &tokens.iter().map(|t| (t + 1) % 64).collect::<Vec<_>>(),
        &[4, 16],
    )?;
    let mut losses = vec![];
    for s in 0..5 {
        let (loss, _) = steps.train_step(
            &mut state,
            &x,
            &y,
            &StepScalars {
                lr_scale: 1.0,
                t: s + 1,
                dropout_seed: s,
            },
        )?;
        losses.push(loss.item_f32()?);
    }
    anyhow::ensure!(
        losses.iter().all(|l| l.is_finite()),
        "non-finite loss in smoke step: {losses:?}"
    );
    println!(
        "  IR program: {} weights, {} ops",
        program.weights.len(),
        program.nodes.len()
    );
    println!(
        "  Training check: loss {:.4} -> {:.4} over 5 compiled steps (finite, OK)",
        losses[0], losses[4]
    );
    println!("=== SMOKE: All checks passed ===");
    Ok(())
}

fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
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

fn main() -> ExitCode {
    // Output piped into `head` ends the process quietly, as for any Unix tool, instead of a
    // "broken pipe" panic. (Sockets are unaffected: Rust sends with MSG_NOSIGNAL.)
    // SAFETY: first thing in main, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mlx_env = mixsweep_runner::mlx_env::MlxEnv::prepare();
    let cli = Cli::parse();
    // Long work stops cleanly on Ctrl-C / SIGTERM / the orchestrator's exit: the handler goes in
    // before anything else happens (a signal before it would kill the process without a summary).
    let stop = Arc::new(AtomicBool::new(false));
    if matches!(cli.command, Command::Train { .. } | Command::Prepare { .. }) {
        mixsweep_runner::interrupt::install(stop.clone());
    }
    let result: Result<(), (i32, String)> = match cli.command {
        Command::Train {
            config,
            train: train_glob,
            val,
            out,
            steps,
            safetensors_load,
            safetensors_out,
            device: d,
            compute_dtype,
            quiet,
            cpuprofile,
            artifacts,
            progress_json,
            eval,
            lut_dir,
            resume,
        } => {
            let on_cpu = match d {
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
            let out = match (&out, &artifacts) {
                (None, Some(_)) => {
                    Some(std::env::temp_dir().join(format!("mixsweep-run-{}", std::process::id())))
                }
                _ => out,
            };
            let config = match mixsweep_runner::remote::local_config(&config, out.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(2, e),
            };
            if let (true, Some(url), Some(dir)) = (resume, &artifacts, &out)
                && let Err(e) = mixsweep_runner::remote::fetch_resume(url, dir)
            {
                return fail(1, e);
            }
            let profiler = match &cpuprofile {
                Some(_) => match pprof::ProfilerGuardBuilder::default()
                    .frequency(499)
                    .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                    .build()
                {
                    Ok(g) => Some(g),
                    Err(e) => return fail(1, format!("cannot start the CPU profiler: {e}")),
                },
                None => None,
            };
            let opts = TrainOptions {
                config,
                train: train_glob,
                val,
                out,
                steps,
                safetensors_load,
                safetensors_out,
                device: device(d),
                compute_dtype: compute_dtype.map(|c| match c {
                    DtypeArg::Float32 => ComputeDtype::Float32,
                    DtypeArg::Bfloat16 => ComputeDtype::Bfloat16,
                }),
                quiet,
                progress_json,
                eval,
                lut_dir,
                resume,
                stop,
            };
            let result = train(&opts)
                .map(|_| ())
                .map_err(|e| (e.exit_code(), e.to_string()));
            if let (Some(guard), Some(path)) = (profiler, &cpuprofile)
                && let Err(e) = write_profile(&guard, path)
            {
                eprintln!("error: writing the CPU profile {}: {e}", path.display());
            }
            match (&artifacts, &opts.out) {
                (Some(url), Some(out)) => {
                    let files = mixsweep_runner::remote::Artifacts {
                        config: &opts.config,
                        out,
                        weights: opts.safetensors_out.as_deref(),
                        cpuprofile: cpuprofile.as_deref(),
                    };
                    match files.upload(url) {
                        Ok(()) => result,
                        Err(e) => Err((
                            1,
                            format!(
                                "{}could not upload the artifacts to {url}: {e} (they are kept in {})",
                                result
                                    .as_ref()
                                    .err()
                                    .map(|r| format!("{}; ", r.1))
                                    .unwrap_or_default(),
                                out.display()
                            ),
                        )),
                    }
                }
                _ => result,
            }
        }
        Command::Eval {
            config,
            safetensors_load,
            train,
            val,
            lut_dir,
            device: d,
            compute_dtype,
            json,
        } => {
            let dtype = compute_dtype.map(|c| match c {
                DtypeArg::Float32 => ComputeDtype::Float32,
                DtypeArg::Bfloat16 => ComputeDtype::Bfloat16,
            });
            match mixsweep_runner::remote::local_config(&config, None) {
                Err(e) => Err((2, e)),
                Ok(config) => mixsweep_runner::train::evaluate_weights(
                    &config,
                    &safetensors_load,
                    &train,
                    val.as_deref(),
                    lut_dir.as_deref(),
                    device(d),
                    dtype,
                )
                .map(|r| {
                    if json {
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
                })
                .map_err(|e| (e.exit_code(), e.to_string())),
            }
        }
        Command::Generate {
            config,
            safetensors_load,
            prompt,
            tokenizer,
            max_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            no_cache,
            device: d,
            ids,
        } => {
            use mixsweep_runner::generate::{GenerateOptions, Sampling, generate};
            use std::io::Write;
            if !(top_p > 0.0 && top_p <= 1.0) {
                return fail(2, format!("--top-p {top_p} must be in (0, 1]"));
            }
            if !(temperature >= 0.0 && temperature.is_finite()) {
                return fail(
                    2,
                    format!(
                        "--temperature {temperature} must be a finite number >= 0 (0 is greedy)"
                    ),
                );
            }
            let opts = GenerateOptions {
                config,
                weights: safetensors_load,
                prompt,
                tokenizer,
                max_tokens,
                sampling: Sampling {
                    temperature,
                    top_k,
                    top_p,
                },
                seed,
                no_cache,
                device: device(d),
            };
            let mut out = std::io::stdout();
            match generate(&opts, |piece| {
                let _ = out.write_all(piece.as_bytes()).and_then(|_| out.flush());
            }) {
                Ok(generated) => {
                    println!();
                    if ids {
                        println!("{}", serde_json::json!({ "ids": generated }));
                    }
                    Ok(())
                }
                Err(e) => Err((e.exit_code(), e.to_string())),
            }
        }
        Command::Count { config, json } => {
            count(&config, json).map_err(|e| (e.exit_code(), e.to_string()))
        }
        Command::Smoke { device: d } => smoke(d).map_err(|e| (1, format!("{e:#}"))),
        Command::Prepare {
            input,
            output,
            byte_level,
            vocab_size,
            tokenizer_path,
            text_field,
            val_split,
            tokens_per_shard,
            quiet,
        } => {
            use mixsweep_runner::prepare::{PrepareOptions, TokenizerChoice, prepare};
            let tokenizer = match (byte_level, vocab_size, tokenizer_path) {
                (true, _, _) => TokenizerChoice::Bytes,
                (_, Some(v), _) => TokenizerChoice::TrainBpe { vocab_size: v },
                (_, _, Some(p)) => TokenizerChoice::Load(p),
                _ => unreachable!("clap requires one tokenizer choice"),
            };
            let opts = PrepareOptions {
                input,
                output: output.clone(),
                tokenizer,
                text_field,
                val_split,
                tokens_per_shard,
                quiet,
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
                        output.display(),
                        p.vocab_size
                    );
                    Ok(())
                }
                Err(e) if stop.load(Ordering::SeqCst) => Err((130, e)),
                Err(e) => Err((2, e)),
            }
        }
    };
    mlx_env.finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code as u8)
        }
    }
}
