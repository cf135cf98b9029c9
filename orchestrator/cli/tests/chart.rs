//! The Helm chart (charts/mixsweep) renders, with `helm template`, into manifests that deserialize into
//! the typed `k8s-openapi` objects, and its Role allows exactly what the Kubernetes backend uses.
//! helm comes from PATH, `MIXSWEEP_HELM`, or target/tools/helm (scripts/get-helm.sh, run by .ci/run).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use std::path::PathBuf;
use std::process::Command;

mod support;
use support::*;

fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("MIXSWEEP_HELM") {
        return h.into();
    }
    let local = root().join("target/tools/helm");
    if local.is_file() {
        return local;
    }
    let on_path = Command::new("helm").arg("version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "the chart test needs helm: run scripts/get-helm.sh (puts it in target/tools/helm)"
    );
    "helm".into()
}

fn render(args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let o = Command::new(helm())
        .args(["template", "rel"])
        .arg(root().join("charts/mixsweep"))
        .args(["--namespace", "ml"])
        .args(args)
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| {
            serde_saphyr::from_str::<serde_json::Value>(d)
                .unwrap_or_else(|e| panic!("not YAML: {e}\n{d}"))
        })
        .collect())
}

fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} does not deserialize: {e}\n{v:#}", v["kind"]))
}

#[test]
fn default_values_render_rbac_only() {
    let docs = render(&[]).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ServiceAccount").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"Role") && kinds.contains(&"RoleBinding"),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"Job") && !kinds.contains(&"Secret"),
        "{kinds:?}"
    );
    for d in &docs {
        match d["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                let _: ServiceAccount = typed(d);
            }
            "Role" => {
                let role: Role = typed(d);
                let mut rules: Vec<String> = role
                    .rules
                    .unwrap()
                    .iter()
                    .map(|r| {
                        format!(
                            "{:?} {:?} {:?}",
                            r.api_groups.clone().unwrap(),
                            r.resources.clone().unwrap(),
                            r.verbs
                        )
                    })
                    .collect();
                rules.sort();
                assert_eq!(
                    rules,
                    vec![
                        r#"[""] ["events"] ["get", "list", "watch"]"#,
                        r#"[""] ["pods"] ["get", "list", "watch"]"#,
                        r#"[""] ["pods/log"] ["get"]"#,
                        r#"["batch"] ["jobs"] ["create", "get", "list", "watch", "delete"]"#,
                    ]
                );
            }
            "RoleBinding" => {
                let rb: RoleBinding = typed(d);
                let s = &rb.subjects.unwrap()[0];
                assert_eq!(
                    (s.kind.as_str(), s.name.as_str()),
                    ("ServiceAccount", "rel-mixsweep")
                );
                assert_eq!(rb.role_ref.name, "rel-mixsweep");
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn the_sweep_job_runs_the_sweep_from_its_config_map() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("s.yaml");
    std::fs::write(&sweep, "name: incluster\nbase: tiny.json\nbackend: kubernetes\nstorage: s3://b/runs\ntrain: s3://b/data/train_*.bin\n").unwrap();
    let docs = render(&[
        "--set",
        "sweep.enabled=true",
        "--set-file",
        &format!("sweep.file={}", sweep.display()),
        "--set-file",
        &format!(
            "sweep.configs.tiny\\.json={}",
            root().join("examples/tiny.json").display()
        ),
        "--set",
        "storageCredentials.create=true",
        "--set",
        "storageCredentials.env.AWS_REGION=eu-west-1",
        "--set",
        "sweep.extraArgs={--max-parallel,4}",
    ])
    .unwrap();
    let get = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let job: Job = typed(get("Job"));
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("rel-mixsweep"));
    let c = &pod.containers[0];
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "run",
            "/sweep/sweep.yaml",
            "--backend",
            "kubernetes",
            "--namespace",
            "ml",
            "--max-parallel",
            "4"
        ]
    );
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "rel-mixsweep-storage"
    );
    let cm: ConfigMap = typed(get("ConfigMap"));
    let data = cm.data.unwrap();
    assert!(data["sweep.yaml"].contains("name: incluster"));
    assert!(data["tiny.json"].contains("\"model_dim\""));
    let secret: Secret = typed(get("Secret"));
    assert_eq!(secret.string_data.unwrap()["AWS_REGION"], "eu-west-1");

    // Enabling the Job without a sweep file fails with the fix.
    let e = render(&["--set", "sweep.enabled=true"]).unwrap_err();
    assert!(e.contains("sweep.enabled needs sweep.file"), "{e}");
}
