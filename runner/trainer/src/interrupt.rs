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

/// The signals that ask a run to stop.
#[cfg(unix)]
const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The first request sets the flag; a second ends the process at once.
fn request_stop(stop: &AtomicBool) {
    if stop.swap(true, Ordering::SeqCst) {
        std::process::exit(130);
    }
    eprintln!("interrupt: stopping after the current step (press again to abort)");
}

/// Installs the stop-signal handling and the parent watch for `stop`. Must run before any thread
/// of ours exists.
///
/// A terminal's Ctrl-C (and an orchestrator's SIGINT) reaches the whole process group, including the
/// C++ compiler MLX runs for a CPU kernel; one killed mid-write failed the step and left a
/// half-written library behind. So the stop signals are *ignored* on Linux (a disposition every
/// child inherits, through `sh -c` and `g++` alike; a blocked mask alone would not survive dash,
/// which clears it) and *blocked* in every thread, which keeps them queued for the one thread that
/// takes them with `sigwait`.
/// MLX's CPU stream thread exists before main; it is blocked through MLX's scheduler.
#[cfg(unix)]
pub fn install(stop: Arc<AtomicBool>) {
    // SAFETY: sigset_t is plain data set up by sigemptyset/sigaddset; SIG_IGN needs no handler;
    // pthread_sigmask changes this thread's mask, and every thread started later inherits it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        // Linux queues a blocked signal even when ignored; POSIX leaves that open (macOS may
        // discard it), so elsewhere only the mask protects the children.
        if cfg!(target_os = "linux") {
            for sig in STOP_SIGNALS {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
        set
    };
    if let Err(e) = mixsweep_mlx::device::block_signals_on_cpu_stream(&STOP_SIGNALS) {
        eprintln!("warning: {e}: a Ctrl-C may be lost while MLX's CPU thread runs");
    }
    let flag = stop.clone();
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: waits for one of the signals blocked above.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                request_stop(&flag);
            }
        }
    });
    watch_parent(stop);
}

#[cfg(not(unix))]
pub fn install(_stop: Arc<AtomicBool>) {}

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
