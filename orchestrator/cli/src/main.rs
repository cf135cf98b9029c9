//! `mixsweep`: the command users type.
//!
//! * `plan`: expand and validate a sweep, print the trial table with each trial's state, run nothing.
//! * `run`: run the trials that are not done (local processes, Docker or Kubernetes), then print the
//!   ranked table.
//! * `results`: the ranked table (or per-variant aggregates over seeds) from storage alone, with exports.
//! * `status`: every sweep in storage and its progress.
//!
//! Exit codes: 0 ok, 1 some trials failed, 2 the sweep or a config in it is invalid, 130 interrupted.

mod docker;
mod kubernetes;
mod results;
mod run;
mod storage;

use clap::{Parser, Subcommand};
use mixsweep_sweep::Sweep;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mixsweep",
    version,
    about = "Sweep model architectures: plan, run and rank trials"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Expand a sweep into trials, validate every trial's config, and print the trial table.
    Plan {
        sweep: PathBuf,
        /// Print the trials (with their full configs) as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Storage root to read trial states from (default: the sweep's `storage`, else ./mixsweep-runs).
        #[arg(long)]
        storage: Option<String>,
        /// With --manifests: print the Job manifests this backend would submit (kubernetes).
        #[arg(long, value_parser = ["kubernetes"])]
        backend: Option<String>,
        /// Print the exact Kubernetes Job manifests (YAML documents), for review or `kubectl apply`.
        #[arg(long, requires = "backend")]
        manifests: bool,
        /// Namespace written into the manifests (default: the sweep's kubernetes.namespace, else default).
        #[arg(long)]
        namespace: Option<String>,
        /// Runner image written into the manifests (default: the sweep's `image`).
        #[arg(long)]
        image: Option<String>,
    },
    /// Results of a sweep from storage: one row per trial ranked by the metric, or aggregated per variant.
    Results {
        /// A sweep name, a sweep file, or a storage URL ending in /sweeps/<name>.
        sweep: String,
        #[arg(long)]
        storage: Option<String>,
        /// Aggregate over seeds: mean, std, n, paired difference to the best variant and its seed wins.
        #[arg(long, value_parser = ["variant"])]
        group_by: Option<String>,
        #[arg(long)]
        csv: Option<PathBuf>,
        #[arg(long)]
        parquet: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Sweeps in storage and their progress.
    Status {
        #[arg(long)]
        storage: Option<String>,
    },
    /// Run a sweep's unfinished trials (local runner processes) and print the ranked results.
    Run {
        sweep: PathBuf,
        /// Storage root (default: the sweep's `storage`, else ./mixsweep-runs).
        #[arg(long)]
        storage: Option<String>,
        /// Trials at a time (default: the sweep's max_parallel, else one per GPU, else 1).
        #[arg(long)]
        max_parallel: Option<usize>,
        /// `all` runs done trials again too; `failed` (the default behaviour) reruns failed and interrupted ones.
        #[arg(long, value_parser = ["failed", "all"])]
        rerun: Option<String>,
        /// No live view; only errors.
        #[arg(long)]
        quiet: bool,
        /// Where trials run (default: the sweep's `backend`, else local).
        #[arg(long, value_parser = ["local", "docker", "kubernetes"])]
        backend: Option<String>,
        /// Runner image for container backends (default: the sweep's `image`, else mixsweep-runner:cpu).
        #[arg(long)]
        image: Option<String>,
        /// Keep the containers of failed trials for inspection (docker backend).
        #[arg(long)]
        keep_failed: bool,
        /// kubeconfig context (kubernetes backend; default: the sweep's, else the current context).
        #[arg(long)]
        context: Option<String>,
        /// Namespace for the Jobs (kubernetes backend; default: the sweep's, else the context's).
        #[arg(long)]
        namespace: Option<String>,
    },
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// Prints `rows` under `headers` in left-aligned columns two spaces apart.
fn print_aligned(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&mut headers.iter().copied()));
    for r in rows {
        println!("{}", line(&mut r.iter().map(String::as_str)));
    }
}

fn print_table(s: &Sweep, states: &[&str]) {
    let headers = [
        "trial",
        "variant",
        "overrides",
        "seed",
        "params",
        "FLOPs/token",
        "steps",
        "state",
    ];
    let rows: Vec<Vec<String>> = s
        .trials
        .iter()
        .zip(states)
        .map(|(t, state)| {
            [
                t.id.clone(),
                t.variant.clone(),
                if t.overrides.is_empty() {
                    "-".into()
                } else {
                    t.overrides_text()
                },
                t.seed.to_string(),
                human(t.params as f64),
                human(t.flops_per_token),
                t.steps.to_string(),
                state.to_string(),
            ]
            .to_vec()
        })
        .collect();
    print_aligned(&headers, &rows);
    let (metric, goal) = s.spec.metric();
    println!(
        "\nsweep {:?}: {} trials ({} variants), metric {metric} ({goal:?}), backend {:?}",
        s.spec.name,
        s.trials.len(),
        s.trials
            .iter()
            .map(|t| &t.variant)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        s.spec.backend
    );
    for (variant, overrides, id) in &s.duplicates {
        println!("  duplicate: {variant} {overrides} is trial {id}; it runs once");
    }
    for k in &s.skipped {
        println!(
            "  skipped (invalid): {} {}: {}",
            k.variant,
            k.overrides
                .iter()
                .map(|(p, v)| format!("{p}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            k.reason
        );
    }
}

/// Each trial's state from storage; `unknown` (with one warning saying why) when storage cannot be read.
fn plan_states(s: &Sweep, root: &str) -> Vec<&'static str> {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match storage::Storage::open(root) {
        Ok(st) => {
            let mut warned = false;
            s.trials
                .iter()
                .map(
                    |t| match rt.block_on(storage::TrialStates::trial_state(&st, &t.id)) {
                        Ok(x) => x.as_str(),
                        Err(e) => {
                            if !warned {
                                eprintln!("warning: cannot read trial states from {root}: {e}");
                                warned = true;
                            }
                            "unknown"
                        }
                    },
                )
                .collect()
        }
        Err(e) => {
            eprintln!("warning: cannot open storage {root}: {e}; states are unknown");
            vec!["unknown"; s.trials.len()]
        }
    }
}

/// The ranked table printed after `run`: one row per trial, sorted by the sweep's metric.
fn print_results(
    sweep: &Sweep,
    storage: &storage::Storage,
    outcomes: &[(mixsweep_sweep::Trial, run::Outcome)],
) {
    let rt = tokio::runtime::Handle::current();
    let (metric, goal) = sweep.spec.metric();
    let key = match metric.as_str() {
        "val_loss" => "best_val_loss",
        "train_loss" => "final_train_loss",
        other => other,
    }
    .to_string();
    let mut rows: Vec<(Option<f64>, Vec<String>)> = outcomes
        .iter()
        .map(|(t, o)| {
            let s = tokio::task::block_in_place(|| {
                rt.block_on(storage.get_json(&format!("trials/{}/summary.json", t.id)))
            })
            .ok()
            .flatten()
            .unwrap_or_default();
            let m = s[&key].as_f64();
            let f = |k: &str| {
                s[k].as_f64()
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_else(|| "-".into())
            };
            let status = match o {
                run::Outcome::Cached => "cached".to_string(),
                run::Outcome::Done => "done".to_string(),
                run::Outcome::Interrupted => "interrupted".to_string(),
                run::Outcome::Failed(_) => match s["status"].as_str() {
                    Some(status) => status.to_string(),
                    // no summary: how the attempt ended (oom, engine_error, timeout, failed)
                    None => tokio::task::block_in_place(|| {
                        rt.block_on(storage.get_json(&format!("trials/{}/attempt.json", t.id)))
                    })
                    .ok()
                    .flatten()
                    .and_then(|a| a["status"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "failed".into()),
                },
            };
            (
                m,
                vec![
                    t.id.clone(),
                    t.variant.clone(),
                    if t.overrides.is_empty() {
                        "-".into()
                    } else {
                        t.overrides_text()
                    },
                    t.seed.to_string(),
                    human(t.params as f64),
                    f("best_val_loss"),
                    f("final_val_loss"),
                    s["mean_tok_s"]
                        .as_f64()
                        .map(|v| format!("{v:.0}"))
                        .unwrap_or_else(|| "-".into()),
                    s["wall_time_s"]
                        .as_f64()
                        .map(|v| format!("{v:.1}s"))
                        .unwrap_or_else(|| "-".into()),
                    status,
                ],
            )
        })
        .collect();
    rows.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => {
            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if goal == mixsweep_sweep::spec::Goal::Max {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    });
    let headers = [
        "rank",
        "trial",
        "variant",
        "overrides",
        "seed",
        "params",
        "best_val",
        "final_val",
        "tok/s",
        "wall",
        "status",
    ];
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (_, r))| [vec![(i + 1).to_string()], r].concat())
        .collect();
    print_aligned(&headers, &table);
    println!(
        "\nranked by {metric} ({goal:?}); artifacts in {}/trials/<trial>/",
        storage.root
    );
}

fn main() -> ExitCode {
    for (k, v) in [
        ("POLARS_FMT_MAX_ROWS", "1000"),
        ("POLARS_FMT_MAX_COLS", "30"),
        ("POLARS_FMT_STR_LEN", "80"),
        ("POLARS_FMT_TABLE_HIDE_DATAFRAME_SHAPE_INFORMATION", "1"),
        ("POLARS_FMT_TABLE_HIDE_COLUMN_DATA_TYPES", "1"),
    ] {
        if std::env::var_os(k).is_none() {
            // SAFETY: first thing in main, before any thread starts.
            unsafe { std::env::set_var(k, v) };
        }
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Results {
            sweep,
            storage,
            group_by,
            csv,
            parquet,
            json,
        } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = (|| -> anyhow::Result<()> {
                let target = results::resolve(&sweep, storage)?;
                let trials = rt.block_on(results::trials_frame(&target))?;
                let mut table = if group_by.is_some() {
                    results::group_by_variant(&trials, target.goal_max)?
                } else {
                    trials
                };
                println!("{table}");
                results::export(
                    &mut table,
                    csv.as_deref(),
                    parquet.as_deref(),
                    json.as_deref(),
                )?;
                Ok(())
            })();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Status { storage } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(results::status(
                &storage.unwrap_or_else(|| "./mixsweep-runs".into()),
            )) {
                Ok(df) => {
                    println!("{df}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run {
            sweep,
            storage,
            max_parallel,
            rerun,
            quiet,
            backend,
            image,
            keep_failed,
            context,
            namespace,
        } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let opts = run::RunOptions {
                sweep,
                storage,
                max_parallel,
                rerun: if rerun.as_deref() == Some("all") {
                    run::Rerun::All
                } else {
                    run::Rerun::Unfinished
                },
                quiet,
                runner: run::find_runner(),
                backend: backend.map(|b| match b.as_str() {
                    "docker" => mixsweep_sweep::spec::Backend::Docker,
                    "kubernetes" => mixsweep_sweep::spec::Backend::Kubernetes,
                    _ => mixsweep_sweep::spec::Backend::Local,
                }),
                image,
                keep_failed,
                kube: kubernetes::KubeTarget { context, namespace },
            };
            match rt.block_on(run::run(opts)) {
                Ok((sweep, storage, outcomes, interrupted)) => {
                    let _guard = rt.enter();
                    rt.block_on(async { print_results(&sweep, &storage, &outcomes) });
                    if interrupted {
                        ExitCode::from(130)
                    } else if outcomes
                        .iter()
                        .any(|(_, o)| matches!(o, run::Outcome::Failed(_)))
                    {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    let invalid = e.downcast_ref::<mixsweep_sweep::SweepError>().is_some();
                    ExitCode::from(if invalid { 2 } else { 1 })
                }
            }
        }
        Command::Plan {
            sweep,
            json,
            storage,
            backend: _,
            manifests,
            namespace,
            image,
        } => match mixsweep_sweep::load(&sweep) {
            Ok(s) => {
                let root = storage
                    .clone()
                    .or_else(|| s.spec.storage.clone())
                    .unwrap_or_else(|| "./mixsweep-runs".into());
                if manifests {
                    let ns = namespace
                        .or_else(|| s.spec.kubernetes.namespace.clone())
                        .unwrap_or_else(|| "default".into());
                    return match kubernetes::manifests(&s.spec, &s.trials, image, &root, &ns) {
                        Ok(jobs) => {
                            for job in jobs {
                                match serde_saphyr::to_string(&job) {
                                    Ok(y) => print!("---\n{y}"),
                                    Err(e) => {
                                        eprintln!("error: cannot write a manifest as YAML: {e}");
                                        return ExitCode::from(1);
                                    }
                                }
                            }
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("error: {}: {e}", sweep.display());
                            ExitCode::from(2)
                        }
                    };
                }
                if json {
                    for t in &s.trials {
                        let line = serde_json::json!({
                            "id": t.id, "variant": t.variant, "seed": t.seed, "params": t.params,
                            "flops_per_token": t.flops_per_token, "steps": t.steps, "train": t.train, "val": t.val,
                            "overrides": t.overrides.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
                            "config": t.config,
                        });
                        println!("{line}");
                    }
                } else {
                    let states = plan_states(&s, &root);
                    print_table(&s, &states);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
