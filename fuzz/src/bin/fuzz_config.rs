//! Any bytes as a model config (JSONC): parsing must return a config or a `ConfigError`, never
//! panic; a config that parses must lower to an IR program and count, never panic.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(cfg) = mixsweep_model::ModelConfig::from_jsonc(text) {
            let counts = cfg.counts();
            assert!(counts.params > 0);
        }
    });
}
