//! The commands that read results from storage: `results`, `report`, `diff`, `status`. Each parses
//! nothing itself (clap did) and returns an error for `main` to print.

use crate::{compare, curves, diff, diff_sweeps, isoflop, report as html, results, storage, table};
use anyhow::{Result, bail};
use polars::prelude::DataFrame;
use std::path::PathBuf;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

#[derive(clap::Args)]
pub struct ResultsArgs {
    /// A sweep name, a sweep file, or a storage URL ending in /sweeps/<name>; several sweeps are
    /// merged into one table with a `sweep` column (a trial they share appears once).
    #[arg(required = true, num_args = 1..)]
    pub sweep: Vec<String>,
    #[arg(long)]
    pub storage: Option<String>,
    /// Group over seeds by `variant` or a swept path (e.g. `training.lr`): mean, std, n and a 95%
    /// t interval per group, and for every pair of groups the seed-paired difference with its
    /// interval and the Wilcoxon signed-rank p-value.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Show only the columns whose values differ between trials.
    #[arg(long)]
    pub varying_only: bool,
    /// Mark the trials on the Pareto front of two or three columns (`metric,params`,
    /// `metric,tok_s,wall_s`); tok/s is maximised, the rest minimised (`+col` / `-col` to say).
    #[arg(long, value_delimiter = ',')]
    pub pareto: Vec<String>,
    /// For a full grid over two or more swept paths: print the main effects and two-way
    /// interactions of the metric.
    #[arg(long)]
    pub effects: bool,
    /// Compare at an equal budget instead of at each trial's end: `tokens=2e7` or `flops=1e15`
    /// (training FLOPs); the metric (val_loss or train_loss) is read off each trial's curve in
    /// metrics.jsonl by linear interpolation. Ranking, --group-by and --pareto use that value.
    #[arg(long)]
    pub at: Option<String>,
    /// With --group-by: also write the pairwise comparisons as CSV.
    #[arg(long)]
    pub pairs_csv: Option<PathBuf>,
    /// Add each trial's inference state per sequence after this many tokens (KV caches grow with
    /// the context, recurrent states do not), in MiB at 2 bytes a value: `state_mib_at_<N>`.
    #[arg(long)]
    pub context: Option<usize>,
    /// For a `budget:` sweep: also write the iso-FLOP fits (one row per budget) as CSV.
    #[arg(long)]
    pub fits_csv: Option<PathBuf>,
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[arg(long)]
    pub parquet: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A sweep name, a sweep file, or a storage URL ending in /sweeps/<name>.
    pub sweep: String,
    #[arg(long)]
    pub storage: Option<String>,
    /// Output folder (default: ./mixsweep-report-<sweep>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compare the curves' metric at an equal budget (`tokens=N` or `flops=N`), as `results --at`.
    #[arg(long)]
    pub at: Option<String>,
}

/// `mixsweep results`.
pub fn results(a: ResultsArgs) -> Result<()> {
    let mut targets = a
        .sweep
        .iter()
        .map(|s| results::resolve(s, a.storage.clone()))
        .collect::<Result<Vec<_>>>()?;
    if let Some(text) = &a.at {
        let at = curves::At::parse(text)?;
        eprintln!(
            "metric: {} {} (interpolated from metrics.jsonl)",
            targets[0].metric,
            at.describe()
        );
        targets.iter_mut().for_each(|t| t.at = Some(at));
    }
    targets.iter_mut().for_each(|t| t.context = a.context);
    let target = targets[0].clone();
    let trials = runtime().block_on(results::merged_frame(&targets))?;
    let iso = isoflop::fits(&trials)?;
    match (&iso, &a.fits_csv) {
        (Some(f), Some(p)) => results::export(&mut isoflop::table(f)?, Some(p), None, None)?,
        (None, Some(_)) => bail!(
            "--fits-csv: sweep {:?} has no `budget:` (iso-FLOP fits need compute budgets)",
            target.name
        ),
        _ => {}
    }
    let effects_table = if a.effects {
        compare::effects(&trials)?
    } else {
        None
    };
    let mut shown = match &a.group_by {
        Some(key) => grouped(&trials, key, &target, a.pairs_csv.as_ref())?,
        None => {
            let t = if a.pareto.is_empty() {
                trials
            } else {
                compare::pareto(&trials, &a.pareto)?
            };
            let t = if a.varying_only {
                compare::varying_only(&t)?
            } else {
                t
            };
            table::print_frame(&table::without_empty(&t));
            if let Some(fits) = &iso {
                println!(
                    "\niso-FLOP fits: {} against ln(params) per budget (seed means, least-squares parabola):",
                    target.metric
                );
                table::print_frame(&isoflop::table(fits)?);
            }
            t
        }
    };
    if a.effects {
        match effects_table {
            Some(e) => {
                println!(
                    "\nmain effects and two-way interactions of {} (full grid):",
                    target.metric
                );
                table::print_frame(&e);
            }
            None => eprintln!(
                "--effects: not a full grid over two or more swept paths; no effects table"
            ),
        }
    }
    results::export(
        &mut shown,
        a.csv.as_deref(),
        a.parquet.as_deref(),
        a.json.as_deref(),
    )
}

/// `results --group-by KEY`: prints the groups and their pairwise comparisons; the groups.
fn grouped(
    trials: &DataFrame,
    key: &str,
    target: &results::Target,
    pairs_csv: Option<&PathBuf>,
) -> Result<DataFrame> {
    let c = compare::compare(trials, key, target.goal_max)?;
    table::print_frame(&c.groups);
    if c.pairs.height() > 0 {
        println!(
            "\npaired differences a − b of {} over the seeds both have (95% t interval, Wilcoxon signed-rank):",
            target.metric
        );
        table::print_frame(&c.pairs);
    }
    if let Some(p) = pairs_csv {
        results::export(&mut c.pairs.clone(), Some(p), None, None)?;
    }
    Ok(c.groups)
}

/// `mixsweep report`: prints the page's path, then every figure's.
pub fn report(a: ReportArgs) -> Result<()> {
    let mut target = results::resolve(&a.sweep, a.storage)?;
    target.at = a.at.as_deref().map(curves::At::parse).transpose()?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("mixsweep-report-{}", target.name)));
    let w = runtime().block_on(html::report(&target, &out))?;
    println!("{}", w.html.display());
    for f in &w.figures {
        println!("{}", f.display());
    }
    Ok(())
}

/// `mixsweep diff A B`: two sweeps when both name sweeps in the storage, else two trials.
pub fn diff(a: &str, b: &str, storage: Option<String>) -> Result<()> {
    let root = storage.unwrap_or_else(|| "./mixsweep-runs".into());
    let sections = runtime().block_on(async {
        let store = storage::Storage::open_existing(&root)
            .map_err(|e| anyhow::anyhow!("storage {root}: {e} (pass --storage)"))?;
        if diff_sweeps::is_sweep(&store, a).await? && diff_sweeps::is_sweep(&store, b).await? {
            let ta = results::resolve(a, Some(root.clone()))?;
            let tb = results::resolve(b, Some(root.clone()))?;
            return diff_sweeps::diff(&store, &ta, &tb).await;
        }
        diff::diff(&store, a, b).await
    })?;
    for (title, rows) in sections {
        println!("{title}");
        let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
        if rows.is_empty() {
            println!("  (none)");
        } else {
            table::print(&["", "a", "b", ""], &rows);
        }
        println!();
    }
    Ok(())
}

/// `mixsweep status`.
pub fn status(storage: Option<String>) -> Result<()> {
    let root = storage.unwrap_or_else(|| "./mixsweep-runs".into());
    table::print_frame(&runtime().block_on(results::status(&root))?);
    Ok(())
}
