//! The runner preloads the system's OpenBLAS over the reference BLAS of MLX's Linux CPU wheel
//! (`src/blas.rs`): `smoke` names the library that serves MLX's matmuls, `MIXSWEEP_BLAS=reference`
//! keeps the wheel's, and training gives the same losses either way (up to float32 rounding).
//! CI installs OpenBLAS (`scripts/ensure-openblas.sh`); without it these tests fail and say so.

mod common;
use common::*;

fn blas_line(envs: &[(&str, &str)]) -> String {
    let mut c = runner();
    // the BLAS line is what is checked; uncompiled saves the cold kernel JIT
    c.args(["smoke", "--device", "cpu"])
        .env("MLX_DISABLE_COMPILE", "1");
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "smoke failed: {}", stderr(&o));
    stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("cpu blas: ").map(str::to_string))
        .unwrap_or_else(|| panic!("no `cpu blas:` line in smoke's output:\n{}", stdout(&o)))
}

fn openblas() -> std::path::PathBuf {
    mixsweep_runner::blas::system_openblas()
        .expect("these tests need the system's OpenBLAS (Debian: libopenblas0-pthread; .ci/run installs it)")
}

#[test]
fn matmuls_go_to_openblas_unless_the_reference_blas_is_asked_for() {
    let lib = openblas();
    assert_eq!(blas_line(&[]), lib.display().to_string());
    let reference = blas_line(&[("MIXSWEEP_BLAS", "reference")]);
    assert!(
        reference.contains("libblas") && !reference.contains("openblas"),
        "MIXSWEEP_BLAS=reference should keep the wheel's BLAS, got {reference}"
    );
    // an explicit path is taken as given; a missing one is a warning, not a failure
    assert_eq!(
        blas_line(&[("MIXSWEEP_BLAS", &lib.display().to_string())]),
        lib.display().to_string()
    );
    let mut c = runner();
    let o = c
        .args(["smoke", "--device", "cpu"])
        .env("MLX_DISABLE_COMPILE", "1")
        .env("MIXSWEEP_BLAS", "/nonexistent/libopenblas.so")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("MIXSWEEP_BLAS=/nonexistent/libopenblas.so does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn training_gives_the_same_losses_with_either_blas() {
    let _ = openblas();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), "tiny", |v| {
        v["training"]["log_every"] = 1.into();
        v["training"]["val_every"] = 0.into();
    });
    let losses = |name: &str, blas: Option<&str>| {
        let out = dir.path().join(name);
        let mut c = cpu_train(&cfg, &out, "8");
        // the compiled step is not what is compared here; uncompiled saves the cold kernel JIT
        c.env("MLX_DISABLE_COMPILE", "1").arg("--quiet");
        if let Some(b) = blas {
            c.env("MIXSWEEP_BLAS", b);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        metrics(&out.join("metrics.jsonl"))
            .iter()
            .filter_map(|r| r["train_loss"].as_f64())
            .collect::<Vec<f64>>()
    };
    let fast = losses("openblas", None);
    let slow = losses("reference", Some("reference"));
    assert_eq!(fast.len(), 8, "{fast:?}");
    for (s, (a, b)) in fast.iter().zip(&slow).enumerate() {
        assert!(
            (a - b).abs() < 1e-4,
            "step {s}: OpenBLAS {a} vs reference BLAS {b}"
        );
    }
    assert!(fast[7] < fast[0], "loss should fall: {fast:?}");
}
