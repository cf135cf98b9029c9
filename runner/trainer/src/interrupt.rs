//! How a run is asked to stop: Ctrl-C (SIGINT), SIGTERM or SIGHUP, or its parent going away.
//!
//! The first request sets the stop flag: the loop finishes its current step and writes weights,
//! summary and resume point. A second signal aborts at once (exit 130), for a person pressing
//! Ctrl-C twice. The orchestrator starts each runner in a process group of its own and forwards one
//! signal, so a terminal's Ctrl-C never reaches a runner twice.
//!
//! Parent watch: when `MIXSWEEP_PARENT_FD` names an inherited pipe whose write end the orchestrator
//! holds, the runner treats the end of that pipe (the orchestrator exited, even by `kill -9`) like a
//! first Ctrl-C, so no runner outlives the run that started it.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable naming the parent-watch pipe's file descriptor.
pub const PARENT_FD_ENV: &str = "MIXSWEEP_PARENT_FD";

/// Installs the signal handler and the parent watch for `stop`.
pub fn install(stop: Arc<AtomicBool>) {
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping after the current step (press again to abort)");
    });
    watch_parent(stop);
}

#[cfg(unix)]
fn watch_parent(stop: Arc<AtomicBool>) {
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(PARENT_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
    else {
        return;
    };
    // SAFETY: the orchestrator passes this descriptor for us alone; nothing else in the process
    // opens or closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        // The orchestrator never writes: read returns 0 (or an error) once its end is closed.
        while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
        if !stop.swap(true, Ordering::SeqCst) {
            eprintln!("the orchestrator is gone: stopping after the current step");
        }
    });
}

#[cfg(not(unix))]
fn watch_parent(_stop: Arc<AtomicBool>) {}
