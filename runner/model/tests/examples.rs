//! Every example config loads, and the block-family examples share gqa_shakespeare.json's budget
//! (what `sweeps/block_zoo.yaml` compares): 9-11M parameters active per token.

use mixsweep_model::ModelConfig;
use std::path::PathBuf;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_loads_and_families_share_one_budget() {
    let all = examples();
    assert!(all.len() >= 12, "{all:?}");
    let mut families = 0;
    for path in all {
        let cfg = ModelConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let c = cfg.counts();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with("_shakespeare.json") && name != "nanogpt_shakespeare.json" {
            families += 1;
            let active = c.active_params as f64 / 1e6;
            assert!(
                (9.0..=11.5).contains(&active),
                "{name}: {active:.2}M active parameters, not at gqa_shakespeare's ~10M"
            );
        }
    }
    assert!(families >= 9, "{families} family examples");
}
