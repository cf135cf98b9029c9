//! One stopping policy for the backends that signal their runners themselves (local processes, warm
//! workers, Docker containers): on Ctrl-C, or once the sweep's timeout has passed, an interrupt
//! (SIGINT: the runner stops after its current step and stores its resume point), then a kill
//! [`KILL_AFTER`] later if the attempt has not ended by then.

use super::AttemptCtx;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an interrupted runner has to stop before it is killed.
pub const KILL_AFTER: Duration = Duration::from_secs(30);

/// A signal due to the attempt's runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: stop after the current step.
    Interrupt,
    /// SIGKILL.
    Kill,
}

/// Watches one attempt for Ctrl-C and its timeout; asked on every tick which signal is due.
pub struct StopClock<'a> {
    stop: &'a AtomicBool,
    timeout: Option<Duration>,
    kill_after: Duration,
    started: Instant,
    signalled: Option<Instant>,
    /// Ctrl-C or the timeout asked the attempt to stop.
    pub interrupted: bool,
    /// The timeout did (not Ctrl-C).
    pub timed_out: bool,
}

impl<'a> StopClock<'a> {
    /// Starts the attempt's clock now.
    pub fn new(ctx: &AttemptCtx<'a>) -> StopClock<'a> {
        StopClock::with(ctx.stop, ctx.timeout, KILL_AFTER)
    }

    fn with(
        stop: &'a AtomicBool,
        timeout: Option<Duration>,
        kill_after: Duration,
    ) -> StopClock<'a> {
        StopClock {
            stop,
            timeout,
            kill_after,
            started: Instant::now(),
            signalled: None,
            interrupted: false,
            timed_out: false,
        }
    }

    /// The signal due now, each at most once: the interrupt when Ctrl-C came or the timeout passed,
    /// the kill `KILL_AFTER` after the interrupt.
    pub fn due(&mut self) -> Option<Signal> {
        if !self.interrupted {
            let stop_now = self.stop.load(Ordering::SeqCst);
            let late = self.timeout.is_some_and(|d| self.started.elapsed() > d);
            if !(stop_now || late) {
                return None;
            }
            self.interrupted = true;
            self.timed_out = !stop_now;
            self.signalled = Some(Instant::now());
            return Some(Signal::Interrupt);
        }
        if self
            .signalled
            .is_some_and(|s| s.elapsed() > self.kill_after)
        {
            self.signalled = None;
            return Some(Signal::Kill);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause() {
        std::thread::sleep(Duration::from_millis(5));
    }

    #[test]
    fn ctrl_c_interrupts_once_then_kills_once() {
        let stop = AtomicBool::new(false);
        let mut clock = StopClock::with(
            &stop,
            Some(Duration::from_secs(3600)),
            Duration::from_millis(1),
        );
        assert_eq!(clock.due(), None);
        stop.store(true, Ordering::SeqCst);
        assert_eq!(clock.due(), Some(Signal::Interrupt));
        assert!(clock.interrupted && !clock.timed_out);
        pause();
        assert_eq!(clock.due(), Some(Signal::Kill));
        pause();
        assert_eq!(clock.due(), None);
    }

    #[test]
    fn the_timeout_interrupts_and_says_so_and_the_kill_waits() {
        let stop = AtomicBool::new(false);
        let mut clock = StopClock::with(&stop, Some(Duration::ZERO), Duration::from_secs(3600));
        pause();
        assert_eq!(clock.due(), Some(Signal::Interrupt));
        assert!(clock.interrupted && clock.timed_out);
        assert_eq!(clock.due(), None);
    }
}
