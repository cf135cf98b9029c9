//! Runner child processes: each in a process group of its own (so a terminal's Ctrl-C reaches it
//! once, forwarded by us, not twice), tied to this process by a pipe (it stops after its current
//! step when we exit, even by `kill -9`; see the runner's `interrupt` module), and signalled by us.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The runner's parent-watch variable (must match `mixsweep_runner::interrupt::PARENT_FD_ENV`).
const PARENT_FD_ENV: &str = "MIXSWEEP_PARENT_FD";

/// Holds the write end of a child's parent-watch pipe: the child sees end-of-file when this is
/// dropped or when this process dies. Call [`ParentWatch::spawned`] right after spawning.
pub struct ParentWatch {
    read: Option<OwnedFd>,
    _write: OwnedFd,
}

impl ParentWatch {
    /// Closes this process's copy of the read end once the child has inherited it.
    pub fn spawned(&mut self) {
        self.read = None;
    }
}

/// Prepares `cmd` to run in its own process group with a parent-watch pipe. Keep the returned value
/// until the child has exited.
pub fn detach_and_watch(cmd: &mut tokio::process::Command) -> std::io::Result<ParentWatch> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`; both are close-on-exec.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: freshly created, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read.as_raw_fd();
    cmd.env(PARENT_FD_ENV, read_fd.to_string());
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec; clearing close-on-exec
    // in the child's descriptor table lets this one child inherit the read end.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(read_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(ParentWatch {
        read: Some(read),
        _write: write,
    })
}

/// Sends `sig` to the process group led by `pid` (our runner children lead their own groups).
pub fn signal_group(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a group we created.
    unsafe { libc::kill(-(pid as i32), sig) };
}

/// Whether a process with this pid exists (possibly owned by another user).
pub fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether `pid` is a live `mixsweep-runner` process (Linux: from /proc; elsewhere: alive).
pub fn is_runner(pid: u32) -> bool {
    if !alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("mixsweep-runner"),
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

/// A pid that belonged to a process which has exited.
#[cfg(test)]
pub fn dead_pid_for_tests() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}
