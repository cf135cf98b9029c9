//! Any bytes as a sweep file over a fixed folder (a small config and one data shard): loading must
//! return a sweep or a `SweepError`, never panic. Sweeps larger than 10,000 points are not built
//! (the fuzzer would spend its time expanding them).
use std::sync::OnceLock;

fn fixture() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("model.json"),
            r#"{"model_dim": 32, "vocab_size": 64, "seq_len": 8,
                "blocks": [{"type": "plain", "heads": 2}, {"type": "swiglu"}],
                "training": {"steps": 10, "batch_tokens": 16}}"#,
        )
        .unwrap();
        std::fs::create_dir(d.join("data")).unwrap();
        let mut shard = vec![0u8; 1024];
        shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
        shard[4..8].copy_from_slice(&1i32.to_le_bytes());
        shard[8..12].copy_from_slice(&40i32.to_le_bytes());
        shard.extend((0..40u16).flat_map(|t| (t % 64).to_le_bytes()));
        std::fs::write(d.join("data/train_00000.bin"), &shard).unwrap();
        dir
    })
    .path()
}

fn main() {
    let dir = fixture();
    let file = dir.join("sweep.yaml");
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(spec) = mixsweep_sweep::parse_spec(text) else {
            return;
        };
        let points: usize = spec
            .grid
            .values()
            .map(|v| v.len().max(1))
            .chain(spec.zip.values().next().map(|v| v.len().max(1)))
            .chain(spec.random.as_ref().map(|r| r.samples.max(1)))
            .chain(std::iter::once(spec.seeds.len().max(1)))
            .chain(std::iter::once(spec.variants.len().max(1)))
            .try_fold(1usize, |a, b| a.checked_mul(b))
            .unwrap_or(usize::MAX);
        if points > 10_000 {
            return;
        }
        let _ = mixsweep_sweep::expand(spec, &file, text);
    });
}
