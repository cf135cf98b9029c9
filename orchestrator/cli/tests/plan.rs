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
    c.arg("plan").arg(dir.join("sweep.yaml"));
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
