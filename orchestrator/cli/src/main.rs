//! `mixsweep`: the command users type.
//!
//! * `plan`: expand and validate a sweep, print the trial table with each trial's state, run nothing.
//! * `run`: run the trials that are not done (local processes, Docker or Kubernetes), then print the
//!   ranked table.
//! * `results`: the ranked table (or per-variant aggregates over seeds) from storage alone, with exports.
//! * `status`: every sweep in storage and its progress.
//!
//! Exit codes: 0 ok, 1 some trials failed, 2 the sweep or a config in it is invalid, 130 interrupted.

use mixsweep_artifacts::{AttemptRecord, RunStatus, Summary};

mod backend;
mod commands;
mod compare;
mod curves;
mod diff;
mod diff_sweeps;
mod isoflop;
mod lease;
mod packing;
mod process;
mod report;
mod results;
mod run;
mod slots;
mod stats;
mod storage;
mod table;
mod workdir;

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
        /// With --manifests or --scripts: the backend whose submissions to print (kubernetes, slurm).
        #[arg(long, value_parser = ["kubernetes", "slurm"])]
        backend: Option<String>,
        /// Print the Slurm batch script of every trial (`--backend slurm`), for review.
        #[arg(long, requires = "backend")]
        scripts: bool,
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
    Results(commands::ResultsArgs),
    /// A static HTML report of a sweep (figures inlined; also every figure as SVG and PNG).
    Report(commands::ReportArgs),
    /// How two trials differ (config as JSON paths, what their runs recorded, metrics), or two sweeps
    /// (sweep files as JSON paths, trials paired by point and seed, the paired metric difference).
    Diff {
        /// A trial id (or a unique prefix of one), or a sweep name.
        a: String,
        /// A trial id (or a unique prefix of one), or a sweep name.
        b: String,
        #[arg(long)]
        storage: Option<String>,
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
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_parallel: Option<u64>,
        /// By default new, interrupted and failed trials run; `failed` also reruns diverged ones;
        /// `all` reruns everything, done trials included, from scratch.
        #[arg(long, value_parser = ["failed", "all"])]
        rerun: Option<String>,
        /// If another `mixsweep run` of this sweep holds its lease, wait for it instead of refusing.
        #[arg(long)]
        wait: bool,
        /// No live view; only errors.
        #[arg(long)]
        quiet: bool,
        /// Where trials run (default: the sweep's `backend`, else local).
        #[arg(long, value_parser = ["local", "docker", "kubernetes", "slurm"])]
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

use table::human;

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
                t.id.to_string(),
                t.variant().to_string(),
                if t.overrides().is_empty() {
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
    table::print(&headers, &rows);
    let (metric, goal) = s.spec.metric();
    // how trials will run: warm workers (local and docker) by `workers:` / MIXSWEEP_WORKERS
    use mixsweep_sweep::spec::Backend as Kind;
    let each = match s.spec.backend {
        Kind::Local => "process",
        Kind::Docker => "container",
        _ => "",
    };
    let workers = match (
        backend::worker::wanted(s.spec.workers, None),
        backend::worker::wanted(s.spec.workers, Some(0)),
    ) {
        _ if each.is_empty() => String::new(),
        (true, _) => " (warm workers)".to_string(),
        (false, true) => format!(" (warm workers on GPUs, a {each} per trial on CPU)"),
        (false, false) => format!(" (a {each} per trial)"),
    };
    println!(
        "\nsweep {:?}: {} trials ({} variants), metric {metric} ({goal:?}), backend {:?}{workers}",
        s.spec.name,
        s.trials.len(),
        s.trials
            .iter()
            .map(|t| t.variant())
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
    let st = match storage::Storage::open_existing(root) {
        Ok(st) => st,
        // nothing stored yet (and plan creates nothing): every trial is new
        Err(_) if !root.contains("://") => return vec!["new"; s.trials.len()],
        Err(e) => {
            eprintln!("warning: cannot open storage {root}: {e}; states are unknown");
            return vec!["unknown"; s.trials.len()];
        }
    };
    // One listing says which trials have anything stored; only those are read. The first error
    // stops all further requests (an unreachable server costs one timeout, not one per trial).
    let stored: std::collections::HashSet<String> = match rt.block_on(st.list_dirs("trials")) {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            eprintln!("warning: cannot read trial states from {root}: {e}; states are unknown");
            return vec!["unknown"; s.trials.len()];
        }
    };
    let mut failed = false;
    s.trials
        .iter()
        .map(|t| {
            if failed {
                return "unknown";
            }
            if !stored.contains(t.id.as_str()) {
                return "new";
            }
            match rt.block_on(storage::TrialStates::trial_state(&st, &t.id)) {
                Ok(x) => x.as_str(),
                Err(e) => {
                    eprintln!(
                        "warning: cannot read trial states from {root}: {e}; states are unknown"
                    );
                    failed = true;
                    "unknown"
                }
            }
        })
        .collect()
}

/// The ranked table printed after `run`: one row per trial, sorted by the sweep's metric.
fn print_results(
    sweep: &Sweep,
    storage: &storage::Storage,
    outcomes: &[(mixsweep_sweep::Trial, run::Outcome)],
) {
    let rt = tokio::runtime::Handle::current();
    let (metric, goal) = sweep.spec.metric();
    let mut rows: Vec<(Option<f64>, Vec<String>)> = outcomes
        .iter()
        .map(|(t, o)| {
            let read = |f: &str| {
                tokio::task::block_in_place(|| {
                    rt.block_on(storage.get_json(&format!("trials/{}/{f}", t.id)))
                })
                .ok()
                .flatten()
            };
            let s: Option<Summary> =
                read("summary.json").and_then(|v| serde_json::from_value(v).ok());
            let m = s.as_ref().and_then(|s| s.metric(&metric));
            let num = |v: Option<f64>, p: usize, unit: &str| {
                v.map(|v| format!("{v:.p$}{unit}"))
                    .unwrap_or_else(|| "-".into())
            };
            let sv = |g: fn(&Summary) -> Option<f64>| s.as_ref().and_then(g);
            let status = match o {
                run::Outcome::Cached => "cached".to_string(),
                run::Outcome::Done => "done".to_string(),
                run::Outcome::Interrupted => "interrupted".to_string(),
                run::Outcome::Diverged(_) => "diverged".to_string(),
                run::Outcome::Unstored(_) => "not stored (kept locally)".to_string(),
                run::Outcome::NotStarted => "not started".to_string(),
                run::Outcome::Failed(_) => match &s {
                    Some(s) => s.status.to_string(),
                    // no summary: how the attempt ended (oom, engine_error, timeout, failed)
                    None => read("attempt.json")
                        .and_then(|v| serde_json::from_value::<AttemptRecord>(v).ok())
                        .map(|a| a.status.to_string())
                        .unwrap_or_else(|| "failed".into()),
                },
            };
            let no_val = s.as_ref().is_some_and(Summary::without_validation);
            let status = if no_val {
                format!("{status}, NO VALIDATION SET")
            } else {
                status
            };
            // only completed trials are ranked (a diverged trial's best val may be its step-0 loss)
            let m = m.filter(|_| {
                matches!(o, run::Outcome::Done | run::Outcome::Cached)
                    && s.as_ref().is_some_and(|s| s.status == RunStatus::Completed)
            });
            (
                m,
                vec![
                    t.id.to_string(),
                    t.variant().to_string(),
                    if t.overrides().is_empty() {
                        "-".into()
                    } else {
                        t.overrides_text()
                    },
                    t.seed.to_string(),
                    human(t.params as f64),
                    num(sv(|s| s.best_val_loss), 4, ""),
                    num(sv(|s| s.final_val_loss), 4, ""),
                    num(sv(|s| Some(s.mean_tok_s)), 0, ""),
                    num(sv(|s| Some(s.wall_time_s)), 1, "s"),
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
    // Unranked trials (no metric: not completed) come last with "-" as their rank.
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (m, r))| {
            let rank = if m.is_some() {
                (i + 1).to_string()
            } else {
                "-".into()
            };
            [vec![rank], r].concat()
        })
        .collect();
    table::print(&headers, &table);
    println!(
        "\nranked by {metric} ({goal:?}); artifacts in {}/trials/<trial>/",
        storage.root
    );
}

/// Loads and expands a sweep; a large one shows its progress on stderr (once a second).
fn load_showing_progress(file: &std::path::Path) -> Result<Sweep, mixsweep_sweep::SweepError> {
    let last = std::sync::Mutex::new(std::time::Instant::now());
    let shown = std::sync::atomic::AtomicBool::new(false);
    let progress = |done: usize, total: usize| {
        if total < 20_000 {
            return;
        }
        let mut at = last.lock().unwrap();
        if at.elapsed() >= std::time::Duration::from_secs(1) {
            *at = std::time::Instant::now();
            shown.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("planning: {done}/{total} points");
        }
    };
    let sweep = mixsweep_sweep::load_with_progress(file, &progress);
    if shown.load(std::sync::atomic::Ordering::Relaxed)
        && let Ok(s) = &sweep
    {
        eprintln!("planning: done, {} trials", s.trials.len());
    }
    sweep
}

/// An error and its causes on one line, each cause once: libraries often repeat their source's
/// text in their own message, which `{:#}` would print again.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The exit status of a command, printing its error.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(1)
        }
    }
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
    if !matches!(cli.command, Command::Run { .. }) {
        // Tables piped into `head` end the process quietly instead of a "broken pipe" panic.
        // (`run` keeps the default: it talks to Docker over a Unix socket.)
        // SAFETY: before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Results(args) => finish(commands::results(args)),
        Command::Report(args) => finish(commands::report(args)),
        Command::Diff { a, b, storage } => finish(commands::diff(&a, &b, storage)),
        Command::Status { storage } => finish(commands::status(storage)),
        Command::Run {
            sweep,
            storage,
            max_parallel,
            rerun,
            wait,
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
                max_parallel: max_parallel.map(|n| n as usize),
                rerun: match rerun.as_deref() {
                    Some("all") => run::Rerun::All,
                    Some("failed") => run::Rerun::Failed,
                    _ => run::Rerun::Unfinished,
                },
                wait,
                quiet,
                runner: backend::find_runner(),
                backend: backend.map(|b| match b.as_str() {
                    "docker" => mixsweep_sweep::spec::Backend::Docker,
                    "kubernetes" => mixsweep_sweep::spec::Backend::Kubernetes,
                    "slurm" => mixsweep_sweep::spec::Backend::Slurm,
                    _ => mixsweep_sweep::spec::Backend::Local,
                }),
                image,
                keep_failed,
                kube: backend::kubernetes::KubeTarget { context, namespace },
            };
            match rt.block_on(run::run(opts)) {
                Ok((sweep, storage, outcomes, interrupted)) => {
                    let _guard = rt.enter();
                    rt.block_on(async { print_results(&sweep, &storage, &outcomes) });
                    if interrupted {
                        ExitCode::from(130)
                    } else if outcomes.iter().any(|(_, o)| {
                        matches!(
                            o,
                            run::Outcome::Failed(_)
                                | run::Outcome::Unstored(_)
                                | run::Outcome::NotStarted
                        )
                    }) {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {}", report(&e));
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
            scripts,
            namespace,
            image,
        } => match load_showing_progress(&sweep) {
            Ok(s) => {
                let root = storage
                    .clone()
                    .or_else(|| s.spec.storage.clone())
                    .unwrap_or_else(|| "./mixsweep-runs".into());
                if scripts {
                    return match backend::slurm::plan_scripts(&s, &root) {
                        Ok(text) => {
                            print!("{text}");
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("error: {}: {e:#}", sweep.display());
                            ExitCode::from(2)
                        }
                    };
                }
                if manifests {
                    let ns = namespace
                        .or_else(|| s.spec.kubernetes.namespace.clone())
                        .unwrap_or_else(|| "default".into());
                    return match backend::kubernetes::manifests(
                        &s.spec, &s.trials, image, &root, &ns,
                    ) {
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
                        let mut line = t.listing();
                        line["config"] = t.config();
                        println!("{line}");
                    }
                } else {
                    let states = plan_states(&s, &root);
                    print_table(&s, &states);
                    if s.spec.auto_packing() {
                        println!("{}", packing::plan_line(&backend::find_runner(), &s.trials));
                    }
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
