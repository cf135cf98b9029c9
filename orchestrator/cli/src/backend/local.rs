//! The `local` backend: each attempt is a `mixsweep-runner train` child process in its own process
//! group, reading and writing the trial's work folder (one per GPU slot with `CUDA_VISIBLE_DEVICES`).
//! Ctrl-C and the sweep's `timeout` send it one SIGINT (it stops after its current step and writes its
//! resume point); it is killed 30 s later if it has not exited.

use super::stopping::{Signal, StopClock};
use super::{AttemptCtx, AttemptEnd, new_metrics};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::time::Duration;

fn signal(child: &tokio::process::Child, sig: i32) {
    if let Some(pid) = child.id() {
        crate::process::signal_group(pid, sig);
    }
}

/// The `mixsweep-runner` arguments of a trial that trains in its work folder (local and Slurm):
/// config and output there, the resume point continued if one is there.
pub fn work_folder_args(ctx: &AttemptCtx<'_>) -> Vec<OsString> {
    let t = ctx.trial;
    let mut args: Vec<OsString> = vec![
        "train".into(),
        "--config".into(),
        ctx.work.join("config.json").into(),
        "--train".into(),
        t.train().into(),
    ];
    if let Some(v) = &t.val() {
        args.extend(["--val".into(), (**v).into()]);
    }
    args.extend([
        "--out".into(),
        ctx.work.join("out").into(),
        "--quiet".into(),
        "--resume".into(),
    ]);
    if ctx.full_eval {
        args.push("--eval".into());
    }
    if ctx.profile {
        args.extend(["--cpuprofile".into(), ctx.work.join("out/cpu.pb").into()]);
    }
    args
}

/// Where concurrent local trials share compiled CUDA kernels (see the runner's kernel_cache), unless
/// the environment already names one.
pub fn kernel_cache_env() -> Option<(&'static str, std::path::PathBuf)> {
    (std::env::var_os("MIXSWEEP_KERNEL_CACHE").is_none()
        && std::env::var_os("MLX_PTX_CACHE_DIR").is_none())
    .then(|| {
        (
            "MIXSWEEP_KERNEL_CACHE",
            mixsweep_store::default_cache_dir().join("mlx-kernels/local"),
        )
    })
}

/// The environment of a local runner (a trial's process or a warm worker): its GPU and the shared
/// kernel cache.
pub fn device_env(cmd: &mut tokio::process::Command, gpu: Option<usize>) {
    if let Some(g) = gpu {
        cmd.env("CUDA_VISIBLE_DEVICES", g.to_string());
    }
    if let Some((k, v)) = kernel_cache_env() {
        cmd.env(k, v);
    }
}

/// One local attempt: a `mixsweep-runner train` child process.
pub async fn attempt(ctx: &AttemptCtx<'_>) -> Result<AttemptEnd> {
    let work = ctx.work;
    let stdout = std::fs::File::create(work.join("stdout.log"))?;
    let stderr = std::fs::File::create(work.join("stderr.log"))?;
    let mut cmd = tokio::process::Command::new(ctx.runner);
    cmd.args(work_folder_args(ctx))
        .stdout(stdout)
        .stderr(stderr)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    device_env(&mut cmd, ctx.gpu);
    let mut watch = crate::process::detach_and_watch(&mut cmd)?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", ctx.runner.display()))?;
    watch.spawned();
    if let Some(pid) = child.id() {
        std::fs::write(work.join("runner.pid"), pid.to_string())?;
    }
    let metrics = work.join("out/metrics.jsonl");
    let mut offset = 0usize;
    let mut clock = StopClock::new(ctx);
    loop {
        let status = child.try_wait()?;
        for m in new_metrics(&metrics, &mut offset) {
            (ctx.on_metrics)(&m);
        }
        if let Some(status) = status {
            drop(watch);
            let _ = std::fs::remove_file(work.join("runner.pid"));
            return Ok(AttemptEnd {
                code: status.code(),
                interrupted: clock.interrupted,
                timed_out: clock.timed_out,
                ..Default::default()
            });
        }
        match clock.due() {
            Some(Signal::Interrupt) => signal(&child, libc::SIGINT),
            Some(Signal::Kill) => child.start_kill()?,
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
