//! Nothing is lost: two runs of one sweep, Ctrl-C typed in a terminal, the orchestrator killed
//! with `kill -9`, and a loss that blows up. Real `mixsweep` and `mixsweep-runner` processes on CPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod support;
use support::*;

fn setup(dir: &Path, body: &str) -> PathBuf {
    prepare_bytes(&dir.join("data"));
    std::fs::copy(root().join("examples/tiny.json"), dir.join("tiny.json")).unwrap();
    let p = dir.join("sweep.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

fn mixsweep(dir: &Path, args: &[&str], sweep: &Path, storage: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.args(args)
        .arg(sweep)
        .arg("--storage")
        .arg(storage)
        .env("MIXSWEEP_RUNNER", runner())
        .env("MIXSWEEP_WORK_DIR", dir.join("work"));
    c
}

/// The pid in the one `runner.pid` under the work folder, once a runner has started.
fn running_runner(dir: &Path) -> u32 {
    let mut pid = None;
    assert!(
        wait_for(120, || {
            pid = find(&dir.join("work"), "runner.pid")
                .first()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|s| s.trim().parse::<u32>().ok());
            pid.is_some()
        }),
        "no runner started"
    );
    pid.unwrap()
}

/// Metrics lines the running trial has written (its progress so far).
fn live_steps(dir: &Path) -> usize {
    find(&dir.join("work"), "metrics.jsonl")
        .first()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map_or(0, |t| t.lines().count())
}

fn alive(pid: u32) -> bool {
    signal(pid, 0)
}

#[test]
fn a_second_run_of_a_running_sweep_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        "name: busy\nbase: tiny.json\nsteps: 100000\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let mut first = mixsweep(dir.path(), &["run", "--quiet"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    running_runner(dir.path());
    assert!(wait_for(120, || live_steps(dir.path()) >= 2), "no progress");
    let second = mixsweep(dir.path(), &["run"], &s, &store).output().unwrap();
    assert!(signal(first.id(), 2));
    first.wait().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already being run") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // the refused run touched nothing: the first run's trial is interrupted with its progress
    let id = &trial_ids(&store, "busy")[0];
    let summary = json(&store.join(format!("trials/{id}/summary.json")));
    assert_eq!(summary["status"], "interrupted");
    assert!(summary["steps_completed"].as_u64().unwrap() > 0);
}

#[test]
fn two_sweeps_with_one_name_in_two_storages_run_at_once_intact() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        "name: twin\nbase: tiny.json\ngrid: {training.lr: [0.001, 0.002]}\nsteps: 120\ntrain: data/train_*.bin\n",
    );
    let stores = [dir.path().join("a"), dir.path().join("b")];
    let children: Vec<_> = stores
        .iter()
        .map(|st| {
            mixsweep(dir.path(), &["run", "--quiet"], &s, st)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for st in &stores {
        for id in trial_ids(st, "twin") {
            let metrics =
                std::fs::read_to_string(st.join(format!("trials/{id}/metrics.jsonl"))).unwrap();
            let last: serde_json::Value =
                serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
            assert_eq!(
                last["step"], 120,
                "final validation line missing: {metrics}"
            );
            assert!(last["val_loss"].is_number());
            assert_eq!(
                json(&st.join(format!("trials/{id}/summary.json")))["status"],
                "completed"
            );
        }
    }
}

/// A pseudo-terminal pair: the master end, and the slave's path.
fn open_pty() -> (std::fs::File, PathBuf) {
    use std::os::fd::FromRawFd;
    unsafe {
        let master = posix_openpt(0o2 | 0o400); // O_RDWR | O_NOCTTY
        assert!(master >= 0);
        assert_eq!(grantpt(master), 0);
        assert_eq!(unlockpt(master), 0);
        let name = std::ffi::CStr::from_ptr(ptsname(master))
            .to_string_lossy()
            .into_owned();
        (std::fs::File::from_raw_fd(master), PathBuf::from(name))
    }
}

unsafe extern "C" {
    fn posix_openpt(flags: i32) -> i32;
    fn grantpt(fd: i32) -> i32;
    fn unlockpt(fd: i32) -> i32;
    fn ptsname(fd: i32) -> *const std::ffi::c_char;
    fn setsid() -> i32;
    fn ioctl(fd: i32, req: u64, ...) -> i32;
}

/// Ctrl-C typed in the terminal reaches the whole foreground process group. The runner must still
/// see one interrupt (it is in a group of its own and gets the orchestrator's forwarded one), so it
/// stops after its step and keeps weights, summary and resume point.
#[test]
fn ctrl_c_in_a_terminal_keeps_the_running_trials_progress() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        "name: tty\nbase: tiny.json\nsteps: 100000\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let (mut master, slave) = open_pty();
    let tty = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave)
            .unwrap()
    };
    let mut cmd = mixsweep(dir.path(), &["run"], &s, &store);
    cmd.stdin(tty()).stdout(tty()).stderr(tty());
    // a session of its own with the pty as controlling terminal, like a shell's foreground job
    unsafe {
        cmd.pre_exec(|| {
            if setsid() < 0 || ioctl(0, 0x540E /* TIOCSCTTY */, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // our copies of the terminal's slave end
    // drain the terminal so the live view never blocks (the thread ends with the test process)
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    running_runner(dir.path());
    assert!(wait_for(120, || live_steps(dir.path()) >= 2), "no progress");
    master.write_all(&[0x03]).unwrap(); // ^C
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let id = &trial_ids(&store, "tty")[0];
    let summary = json(&store.join(format!("trials/{id}/summary.json")));
    assert_eq!(summary["status"], "interrupted", "{summary}");
    assert!(summary["steps_completed"].as_u64().unwrap() > 0);
    assert!(
        store
            .join(format!("trials/{id}/resume.safetensors"))
            .is_file()
    );
    assert!(
        store
            .join(format!("trials/{id}/model.safetensors"))
            .is_file()
    );
}

/// `kill -9` of the orchestrator: its runner notices (parent-watch pipe), stops after its step and
/// writes its resume point; the next run takes over the dead run's lease, stores what the runner
/// left, and continues the trial from there. No runner is left behind, none runs twice.
#[test]
fn a_killed_orchestrator_leaves_no_runner_and_the_next_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        "name: orphan\nbase: tiny.json\nsteps: 100000\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let mut first = mixsweep(dir.path(), &["run", "--quiet"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = running_runner(dir.path());
    assert!(wait_for(120, || live_steps(dir.path()) >= 2), "no progress");
    assert!(signal(first.id(), 9));
    first.wait().unwrap();
    assert!(
        wait_for(60, || !alive(pid)
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "the runner outlived its orchestrator"
    );
    let kept = find(&dir.path().join("work"), "summary.json");
    assert_eq!(kept.len(), 1);
    let cut = json(&kept[0])["steps_completed"].as_u64().unwrap();
    assert!(cut > 0);

    let mut second = mixsweep(dir.path(), &["run"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = trial_ids(&store, "orphan")[0].clone();
    let log = store.join(format!("trials/{id}/stderr.log"));
    // the kept results are stored first, then the trial resumes from them
    assert!(
        wait_for(120, || find(&dir.path().join("work"), "stderr.log")
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(
                |t| t.contains(&format!("resuming at step {cut}/"))
            ))),
        "the trial did not resume from the killed run's step"
    );
    assert!(log.is_file(), "the killed run's logs were not stored");
    assert!(signal(second.id(), 2));
    let mut err = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(second.wait().unwrap().code(), Some(130), "{err}");
    assert!(err.contains("taking over the abandoned run lease"), "{err}");
    assert!(
        err.contains("stored the kept results of 1 trial(s)"),
        "{err}"
    );
}

/// lr 100 sends the loss from ~5.6 to thousands without a NaN: the trial is `diverged`, not
/// `completed`, not ranked, and not run again unless asked (`--rerun failed`).
#[test]
fn a_blown_up_loss_is_diverged_final_and_unranked() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        "name: boom\nbase: tiny.json\ngrid: {training.lr: [0.003, 100]}\nset: {training.warmup_steps: 0, training.grad_clip: 0}\nsteps: 40\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let o = mixsweep(dir.path(), &["run"], &s, &store).output().unwrap();
    assert!(
        o.status.success(),
        "a diverged trial is a result: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = out.lines().collect();
    let ranked = rows
        .iter()
        .find(|l| l.contains("training.lr=0.003"))
        .unwrap();
    let blown = rows.iter().find(|l| l.contains("training.lr=100")).unwrap();
    assert!(ranked.trim_start().starts_with('1'), "{out}");
    assert!(
        blown.trim_start().starts_with('-') && blown.ends_with("diverged"),
        "{out}"
    );
    let ids = trial_ids(&store, "boom");
    let summary = json(&store.join(format!("trials/{}/summary.json", ids[1])));
    assert_eq!(summary["status"], "diverged", "{summary}");
    assert!(
        summary["error"].as_str().unwrap().contains("blew up"),
        "{summary}"
    );

    let again = mixsweep(dir.path(), &["run"], &s, &store).output().unwrap();
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("2 trials, 0 to run, 2 cached"),
        "{}",
        text(&again)
    );
    let forced = mixsweep(dir.path(), &["run", "--rerun", "failed"], &s, &store)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&forced.stderr).contains("2 trials, 1 to run, 1 cached"),
        "{}",
        text(&forced)
    );
}
