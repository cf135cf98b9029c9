//! Object storage at the runner's edges: a config given as a URL is downloaded before training, and
//! `--artifacts URL` uploads a run's files when it ends (whatever its status), `summary.json` last, so
//! that a reader who sees the summary also sees everything else. With `--resume`, the resume point an
//! interrupted run uploaded there is downloaded first. Data shards from URLs are fetched by
//! [`crate::data::resolve_files`].

use std::path::{Path, PathBuf};

/// A local path for `--config`: the argument itself, or for a URL the object downloaded to
/// `<out>/config.json` (or a temp file without `--out`).
pub fn local_config(config: &str, out: Option<&Path>) -> Result<PathBuf, String> {
    if !mixsweep_store::is_url(config) {
        return Ok(PathBuf::from(config));
    }
    let (dir, name) = config
        .rsplit_once('/')
        .ok_or_else(|| format!("--config {config}: not a URL of a file"))?;
    let bytes =
        mixsweep_store::block_on(async { mixsweep_store::Store::open(dir)?.get(name).await })
            .map_err(|e| format!("--config {config}: {e}"))?
            .ok_or_else(|| format!("--config {config}: no such object"))?;
    let folder = out.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mixsweep-config-{}", std::process::id()))
    });
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let local = folder.join("config.json");
    std::fs::write(&local, bytes).map_err(|e| format!("cannot write {}: {e}", local.display()))?;
    Ok(local)
}

/// The files of one run, for upload.
pub struct Artifacts<'a> {
    pub config: &'a Path,
    pub out: &'a Path,
    /// `--safetensors-out` when given (default `<out>/model.safetensors`).
    pub weights: Option<&'a Path>,
    pub cpuprofile: Option<&'a Path>,
}

impl Artifacts<'_> {
    /// Uploads what exists to `url`, `summary.json` last.
    pub fn upload(&self, url: &str) -> Result<(), String> {
        let mut files: Vec<(&str, PathBuf)> = vec![
            ("config.json", self.config.to_path_buf()),
            ("metrics.jsonl", self.out.join("metrics.jsonl")),
            (
                "model.safetensors",
                self.weights
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.out.join("model.safetensors")),
            ),
        ];
        if let Some(p) = self.cpuprofile {
            files.push(("cpu.pb", p.to_path_buf()));
        }
        let resume = self.out.join(mixsweep_store::RESUME_FILE);
        files.push((mixsweep_store::RESUME_FILE, resume.clone()));
        files.push(("summary.json", self.out.join("summary.json")));
        mixsweep_store::block_on(async {
            let store = mixsweep_store::Store::open(url)?;
            for (key, path) in &files {
                store.put_file(key, path).await?;
            }
            // a run that finished leaves no resume point behind
            if !resume.exists() {
                store.delete(mixsweep_store::RESUME_FILE).await?;
            }
            Ok::<(), mixsweep_store::StoreError>(())
        })
        .map_err(|e| e.to_string())
    }
}

/// Downloads the resume point (and the metrics it continues) from `url` into `out`; `false` when
/// there is none.
pub fn fetch_resume(url: &str, out: &Path) -> Result<bool, String> {
    mixsweep_store::block_on(async {
        let store = mixsweep_store::Store::open(url)?;
        mixsweep_store::fetch_resume(&store, "", out).await
    })
    .map_err(|e| format!("--resume from {url}: {e}"))
}
