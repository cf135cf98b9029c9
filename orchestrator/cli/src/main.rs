//! `mixsweep`: the command users type. This version has `plan` (expand and validate a sweep, print the
//! trial table, run nothing); `run`, `results` and `status` come with the local backend and storage.
//! Exit codes: 0 ok, 2 the sweep or a config in it is invalid.

use clap::{Parser, Subcommand};
use mixsweep_sweep::Sweep;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mixsweep", version, about = "Sweep model architectures: plan, run and rank trials")]
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

fn print_table(s: &Sweep) {
    let headers = ["trial", "variant", "overrides", "seed", "params", "FLOPs/token", "steps"];
    let rows: Vec<[String; 7]> = s
        .trials
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                t.variant.clone(),
                if t.overrides.is_empty() { "-".into() } else { t.overrides_text() },
                t.seed.to_string(),
                human(t.params as f64),
                human(t.flops_per_token),
                t.steps.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(headers.to_vec()));
    for r in &rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
    let (metric, goal) = s.spec.metric();
    println!(
        "\nsweep {:?}: {} trials ({} variants), metric {metric} ({goal:?}), backend {:?}",
        s.spec.name,
        s.trials.len(),
        s.trials.iter().map(|t| &t.variant).collect::<std::collections::BTreeSet<_>>().len(),
        s.spec.backend
    );
    for (variant, overrides, id) in &s.duplicates {
        println!("  duplicate: {variant} {overrides} is trial {id}; it runs once");
    }
    for k in &s.skipped {
        println!("  skipped (invalid): {} {}: {}", k.variant, k.overrides.iter().map(|(p, v)| format!("{p}={v}")).collect::<Vec<_>>().join(" "), k.reason);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan { sweep, json } => match mixsweep_sweep::load(&sweep) {
            Ok(s) => {
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
                    print_table(&s);
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
