//! `mixsweep plan` end to end: the real binary on a sweep file.

use std::process::Command;

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(root.join("examples/tiny.json"), d.join("tiny.json")).unwrap();
    std::fs::copy(
        root.join("examples/tiny_mamba.json"),
        d.join("tiny_mamba.json"),
    )
    .unwrap();
    std::fs::create_dir(d.join("data")).unwrap();
    let mut shard = vec![0u8; 1024];
    shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
    shard[4..8].copy_from_slice(&1i32.to_le_bytes());
    shard[8..12].copy_from_slice(&300i32.to_le_bytes());
    shard.extend((0..300u16).flat_map(|t| (t % 256).to_le_bytes()));
    std::fs::write(d.join("data/train_00000.bin"), &shard).unwrap();
    dir
}

fn plan(dir: &std::path::Path, yaml: &str, json: bool) -> std::process::Output {
    std::fs::write(dir.join("sweep.yaml"), yaml).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.arg("plan")
        .arg(dir.join("sweep.yaml"))
        .env_remove("MIXSWEEP_WORKERS");
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

#[test]
fn plan_prints_every_trial() {
    let f = fixture();
    let yaml = "name: q\nvariants:\n  - {name: attention, base: tiny.json}\n  - {name: mamba, base: tiny_mamba.json}\ngrid: {training.lr: [0.001, 0.003]}\nseeds: [1, 2]\ntrain: data/train_*.bin\n";
    let o = plan(f.path(), yaml, false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("8 trials (2 variants)"), "{out}");
    // how the trials will run
    assert!(
        out.contains("backend Local (warm workers on GPUs, a process per trial on CPU)"),
        "{out}"
    );
    let o = plan(f.path(), &format!("{yaml}workers: true\n"), false);
    let warm = String::from_utf8_lossy(&o.stdout);
    assert!(warm.contains("backend Local (warm workers)"), "{warm}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("training.lr=0.003"))
            .count(),
        4,
        "{out}"
    );
    let o = plan(f.path(), yaml, true);
    let trials: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trials.len(), 8);
    assert!(trials.iter().all(
        |t| t["config"]["training"]["lr"].is_number() && t["id"].as_str().unwrap().len() == 16
    ));
}

#[test]
fn invalid_sweep_exits_2_with_location() {
    let f = fixture();
    let o = plan(
        f.path(),
        "name: q\nbase: tiny.json\ngrid: {\"blocks[0].kv_heads\": [3]}\ntrain: data/train_*.bin\n",
        false,
    );
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("sweep.yaml:3:") && e.contains("kv_heads=3 must divide heads=4"),
        "{e}"
    );
}

/// Sweep-file mistakes get the sweep's words and the line of the key at fault, not the YAML
/// parser's vocabulary; things that used to be accepted silently are refused.
#[test]
fn sweep_file_mistakes_are_reported_in_sweep_terms() {
    let f = fixture();
    let base = "base: tiny.json\ntrain: data/train_*.bin\n";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "name: q\nseeds: 1\n",
            "sweep.yaml:2:",
            &["`seeds`", "expected a list"],
        ),
        (
            "name: q\nsteps: abc\n",
            "sweep.yaml:2:",
            &["`steps`", "whole number"],
        ),
        (
            "name: q\nmetric: {name: val_loss, goal: up}\n",
            "sweep.yaml:2:",
            &["`metric`", "goal: min|max"],
        ),
        (
            "name: q\nmetric: [1]\n",
            "sweep.yaml:2:",
            &["`metric`", "metric name"],
        ),
        ("name: q\nname: r\n", "sweep.yaml:2:", &["written twice"]),
        (
            "name: q\nmetric: val_los\n",
            "sweep.yaml:2:",
            &["did you mean \"val_loss\""],
        ),
        ("name: ../up\n", "sweep.yaml:1:", &["must be letters"]),
        (
            "name: q\nvariants:\n  - {name: a, base: tiny.json}\n  - {name: a, base: tiny.json}\n",
            "sweep.yaml:3:",
            &["two variants are named \"a\""],
        ),
        (
            "name: q\nmax_paralel: 2\n",
            "sweep.yaml:2:",
            &["did you mean `max_parallel`"],
        ),
    ];
    for (head, at, wants) in cases {
        // the bad line first, so line numbers are the case's own
        let yaml = format!("{head}{base}");
        let o = plan(f.path(), &yaml, false);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{yaml}\n{e}");
        assert!(e.contains(at), "{yaml}\nwant {at}: {e}");
        for w in *wants {
            assert!(e.contains(w), "{yaml}\nwant {w:?}: {e}");
        }
        for jargon in [
            "sequence start",
            "invalid u64",
            "untagged enum",
            "DuplicateKeyPolicy",
        ] {
            assert!(!e.contains(jargon), "{yaml}\nparser jargon: {e}");
        }
    }
    // a bad `train:` is reported at the train line, not at a `training.*` key above it
    let o = plan(
        f.path(),
        "name: q\nbase: tiny.json\nset: {training.lr: 0.001}\ntrain: nothing/train_*.bin\n",
        false,
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("sweep.yaml:4:"));
}

#[test]
fn read_only_commands_create_no_storage_and_say_when_it_is_missing() {
    let f = fixture();
    std::fs::write(
        f.path().join("sweep.yaml"),
        "name: q\nbase: tiny.json\ntrain: data/train_*.bin\nstorage: never-made\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
        .arg("plan")
        .arg(f.path().join("sweep.yaml"))
        .current_dir(f.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" new"));
    for args in [
        &["status", "--storage"][..],
        &["results", "q", "--storage"][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
            .args(args)
            .arg(f.path().join("never-made"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("does not exist"),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(!f.path().join("never-made").exists());
    let o = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
        .args(["run", "--max-parallel", "0"])
        .arg(f.path().join("sweep.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!f.path().join("never-made").exists());
}

#[test]
fn plan_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let f = fixture();
    std::fs::write(
        f.path().join("sweep.yaml"),
        "name: q\nbase: tiny.json\ngrid: {training.lr: [0.001, 0.002, 0.003]}\nseeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]\ntrain: data/train_*.bin\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
        .arg("plan")
        .arg(f.path().join("sweep.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // then the pipe's read end is closed, like `| head -1`
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
}
