//! `mixsweep-runner`: train one model config on MLX, evaluate or generate from saved weights, count
//! a config, check the MLX install, and prepare data. Exit codes: 0 ok, 2 config/data errors (fix the
//! input), 1 runtime failures (including divergence), 130 interrupted.

mod cli;
mod commands;
mod inspect;
mod worker;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> ExitCode {
    // Before anything else: may restart this program with a fast BLAS preloaded (blas.rs).
    mixsweep_runner::blas::preload_fast_blas();
    // Output piped into `head` ends the process quietly, as for any Unix tool, instead of a
    // "broken pipe" panic. (Sockets are unaffected: Rust sends with MSG_NOSIGNAL.)
    // SAFETY: first thing in main, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut mlx_env = mixsweep_runner::mlx_env::MlxEnv::prepare();
    let cli = Cli::parse();
    // Long work stops cleanly on Ctrl-C / SIGTERM / the orchestrator's exit: the handler goes in
    // before anything else happens (a signal before it would kill the process without a summary).
    let stop = Arc::new(AtomicBool::new(false));
    if matches!(
        cli.command,
        Command::Train(_) | Command::Prepare(_) | Command::Worker
    ) {
        mixsweep_runner::interrupt::install(stop.clone());
    }
    let result = match cli.command {
        Command::Train(a) => commands::run_train(a, stop, &mlx_env, None),
        Command::Worker => worker::run(stop, &mut mlx_env),
        Command::Eval(a) => commands::run_eval(a),
        Command::Generate(a) => commands::run_generate(a),
        Command::Count { config, json } => {
            inspect::count(&config, json).map_err(|e| (e.exit_code(), e.to_string()))
        }
        Command::Smoke { device } => inspect::smoke(device).map_err(|e| (1, format!("{e:#}"))),
        Command::Prepare(a) => commands::run_prepare(a, stop),
        Command::Hiddenstats(a) => commands::run_hiddenstats(a),
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
