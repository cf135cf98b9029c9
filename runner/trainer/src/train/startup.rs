//! Where a run's start-up time goes: named phases from process start to the end of the first
//! training step, kept in `summary.json` (`startup`) and printed with `MIXSWEEP_TIMING=1`.
//!
//! The first phase, `exec`, is the time from the process's start (the kernel's record of it, Linux
//! only) to [`Startup::new`]: loading the binary and `libmlx` and running `main`'s first lines. In a
//! warm worker it is `job` instead: from the job's arrival ([`job_started`]) to [`Startup::new`].

use std::sync::Mutex;
use std::time::Instant;

/// When the worker's current job arrived (`None` outside a worker).
static JOB_START: Mutex<Option<Instant>> = Mutex::new(None);

/// Marks the arrival of a worker's job: the next [`Startup`] counts from now, not from process start.
pub fn job_started() {
    *JOB_START.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
}

pub use mixsweep_artifacts::Phase;

/// A stopwatch that splits the start-up into phases.
#[derive(Debug)]
pub struct Startup {
    last: Instant,
    phases: Vec<Phase>,
    done: bool,
    /// Files the kernel store sent at process start (the first run of a process only).
    kernels_fetched: Option<usize>,
}

impl Startup {
    /// Starts the record; `fetched`: the kernel store's download at process start (a phase of its
    /// own, taken out of `exec`).
    pub fn new(fetched: Option<crate::kernel_store::Fetched>) -> Startup {
        let mut phases = Vec::new();
        let job = *JOB_START.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = job {
            phases.push(Phase {
                name: "job".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
        } else if let Some(s) = since_process_start() {
            // the kernel store's download happened before main's first MLX call: its own phase
            let fetch = fetched.map_or(0.0, |f| f.seconds).min(s);
            phases.push(Phase {
                name: "exec".into(),
                seconds: s - fetch,
            });
            if fetched.is_some() {
                phases.push(Phase {
                    name: "kernel_fetch".into(),
                    seconds: fetch,
                });
            }
        }
        Startup {
            last: Instant::now(),
            phases,
            done: false,
            kernels_fetched: fetched.map(|f| f.files),
        }
    }

    /// Ends the current phase under `name` (ignored once the first step is done).
    pub fn mark(&mut self, name: &'static str) {
        if self.done {
            return;
        }
        let now = Instant::now();
        self.phases.push(Phase {
            name: name.into(),
            seconds: now.duration_since(self.last).as_secs_f64(),
        });
        self.last = now;
    }

    /// Ends the last phase (the first step) and freezes the record.
    pub fn finish(&mut self, name: &'static str) {
        self.mark(name);
        self.done = true;
        if enabled() {
            eprintln!("{}", self.report());
        }
    }

    /// How many files the kernel store sent before this run (its first run in the process only).
    pub fn kernels_fetched(&self) -> Option<usize> {
        self.kernels_fetched
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    pub fn total(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }

    /// `start-up 1.23 s: exec 0.10, config 0.01, ...` with every phase over 1 ms.
    pub fn report(&self) -> String {
        let parts: Vec<String> = self
            .phases
            .iter()
            .filter(|p| p.seconds >= 0.001)
            .map(|p| format!("{} {:.3}", p.name, p.seconds))
            .collect();
        format!("start-up {:.3} s: {}", self.total(), parts.join(", "))
    }
}

impl Default for Startup {
    fn default() -> Self {
        Startup::new(None)
    }
}

/// `MIXSWEEP_TIMING=1`.
pub fn enabled() -> bool {
    std::env::var("MIXSWEEP_TIMING").is_ok_and(|v| v == "1")
}

/// Seconds since this process started, from `/proc/self/stat` (field 22, in clock ticks since
/// boot) and `/proc/uptime`; `None` where those do not exist.
fn since_process_start() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the command name (field 2) may hold spaces: count fields after its closing parenthesis
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = clock_ticks_per_second()?;
    let s = uptime - ticks / hz;
    (0.0..3600.0).contains(&s).then_some(s)
}

fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some(hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_job_counts_from_its_arrival_not_from_process_start() {
        std::thread::sleep(std::time::Duration::from_millis(30));
        job_started();
        let s = Startup::new(None);
        *JOB_START.lock().unwrap() = None;
        let first = &s.phases()[0];
        assert_eq!(first.name, "job");
        assert!(first.seconds < 0.02, "{first:?}");
        assert!(s.phases().iter().all(|p| p.name != "exec"));
    }

    #[test]
    fn phases_add_up_and_freeze_after_the_first_step() {
        let mut s = Startup::new(None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.mark("config");
        s.finish("first_step");
        s.mark("late");
        let names: Vec<&str> = s.phases().iter().map(|p| p.name.as_str()).collect();
        assert!(names.ends_with(&["config", "first_step"]), "{names:?}");
        let config = s.phases().iter().find(|p| p.name == "config").unwrap();
        assert!(config.seconds >= 0.019, "{config:?}");
        assert!(s.report().contains("config 0.0"), "{}", s.report());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_start_is_in_the_recent_past() {
        let s = since_process_start().expect("/proc is readable");
        assert!((0.0..600.0).contains(&s), "{s}");
    }
}
