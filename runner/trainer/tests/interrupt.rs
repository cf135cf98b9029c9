//! End-to-end tests of how the `mixsweep-runner` binary stops: one Ctrl-C keeps weights and summary,
//! also when it reaches the whole process group while MLX compiles a CPU kernel.

mod common;
use common::*;
use mixsweep_runner::kernel_cache::is_whole_library;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn interrupt_group(pgid: u32) {
    // SAFETY: plain kill(2) on the group this test created.
    assert_eq!(unsafe { libc::kill(-(pgid as i32), libc::SIGINT) }, 0);
}

/// `train` on CPU for far more steps than a test waits for.
fn long_cpu_run(cfg: &Path, out: &Path) -> std::process::Command {
    cpu_train(cfg, out, "100000")
}

#[test]
fn interrupt_keeps_weights_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), "long", |v| {
        v["training"]["log_every"] = 1.into()
    });
    let out = dir.path().join("run");
    let mut child = long_cpu_run(&cfg, &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // wait until a few steps have run
    for line in lines.by_ref() {
        if line.unwrap().contains("step 4/") {
            break;
        }
    }
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for _ in lines {}
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "interrupted");
    assert!(s["steps_completed"].as_u64().unwrap() >= 5);
    assert!(out.join("model.safetensors").is_file());
}

/// The live descendants of `pid` (from /proc), with their command names.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parent = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok());
        parent.insert(p, (ppid.unwrap_or(0), comm));
    }
    let is_below = |mut p: u32| {
        for _ in 0..64 {
            match parent.get(&p) {
                Some((pp, _)) if *pp == pid => return true,
                Some((pp, _)) if *pp > 1 => p = *pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .iter()
        .filter(|(p, _)| is_below(**p))
        .map(|(p, (_, comm))| (*p, comm.clone()))
        .collect()
}

fn libraries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            v.extend(libraries(&path));
        } else if path.extension().is_some_and(|e| e == "so" || e == "dylib") {
            v.push(path);
        }
    }
    v
}

/// A terminal's Ctrl-C goes to the whole foreground process group, and so did the orchestrator's:
/// the C++ compiler MLX runs for a CPU kernel must survive it. One that died failed the step, and
/// the half-written library it left, once published, broke every later run on the machine ("file
/// too short", CI 2026-12-02). Here the group is interrupted while a kernel compiles on a cold cache.
#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_to_the_process_group_while_a_kernel_compiles_keeps_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), "cold", |_| {});
    let out = dir.path().join("run");
    let mut child = long_cpu_run(&cfg, &out)
        .env("MIXSWEEP_KERNEL_CACHE", &cache)
        .env("TMPDIR", &tmp)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let compiler = loop {
        let kids = descendants(child.id());
        // the compiler itself (not `sh`, a runner forked but not yet exec'd, or another helper)
        let compiling = |comm: &str| {
            matches!(
                comm,
                "g++" | "c++" | "cc1plus" | "clang" | "clang++" | "as" | "collect2" | "ld"
            )
        };
        if let Some(kid) = kids.into_iter().find(|(_, comm)| compiling(comm)) {
            break kid;
        }
        if started.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("no kernel compile seen within 2 minutes of a cold start");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    interrupt_group(child.id());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let s = read_json(&out.join("summary.json"));
    // a clean stop: the compile in flight ({compiler:?}) finished; a killed compiler fails the
    // step or validation it served ("interrupted while a step ran (...)")
    assert_eq!(s["status"], "interrupted", "{s}");
    assert_eq!(s["error"], "interrupted", "compiling {compiler:?}: {s}");
    if s["steps_completed"].as_u64().unwrap() > 0 {
        assert!(out.join("model.safetensors").is_file());
    }
    let published = libraries(&cache);
    if s["steps_completed"].as_u64().unwrap() > 0 {
        assert!(
            !published.is_empty(),
            "the compiled kernels are shared ({compiler:?}): {err}"
        );
    }
    for lib in published {
        assert!(is_whole_library(&lib), "{} is cut short", lib.display());
    }
}
