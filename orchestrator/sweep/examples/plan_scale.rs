//! Benchmark: expanding a sweep of N trials (default 10^6) — the work of `mixsweep plan`.
//!
//! `cargo run --release -p mixsweep-sweep --example plan_scale -- [N]` writes a sweep over the tiny
//! example config (4 grid axes of training fields and one model axis, sized to give about N trials)
//! into a temporary folder, expands it, and prints the trial count, wall time and peak memory.

use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        root.join("examples/tiny.json"),
        dir.path().join("tiny.json"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let mut shard = vec![0u8; 1024];
    shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
    shard[4..8].copy_from_slice(&1i32.to_le_bytes());
    shard[8..12].copy_from_slice(&300i32.to_le_bytes());
    shard.extend((0..300u16).flat_map(|t| (t % 256).to_le_bytes()));
    std::fs::write(dir.path().join("data/train_00000.bin"), &shard).unwrap();
    // 5 axes: model_dim x 4 training fields, k values each, k^5 >= n
    let k = (1..).find(|k: &usize| k.pow(5) >= n).unwrap();
    let list = |f: &dyn Fn(usize) -> String| (0..k).map(f).collect::<Vec<_>>().join(", ");
    let yaml = format!(
        "name: scale\nbase: tiny.json\ntrain: data/train_*.bin\ngrid:\n  model_dim: [{}]\n  training.lr: [{}]\n  training.weight_decay: [{}]\n  training.beta2: [{}]\n  training.warmup_steps: [{}]\n",
        list(&|i| (64 + 8 * i).to_string()),
        list(&|i| format!("{}", 0.001 * (i + 1) as f64)),
        list(&|i| format!("{}", 0.01 * i as f64)),
        list(&|i| format!("{}", 0.9 + 0.001 * i as f64)),
        list(&|i| (i + 1).to_string()),
    );
    let file = dir.path().join("sweep.yaml");
    std::fs::write(&file, yaml).unwrap();
    let start = Instant::now();
    let sweep = mixsweep_sweep::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let secs = start.elapsed().as_secs_f64();
    let peak_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "{} trials ({} requested) expanded in {secs:.2} s, peak memory {:.0} MiB, {} threads",
        sweep.trials.len(),
        n,
        peak_kib as f64 / 1024.0,
        rayon::current_num_threads()
    );
}
