//! Artifact storage through `object_store`: a local folder (the default, `./mixsweep-runs`),
//! `s3://bucket/prefix` (credentials, region and an endpoint override for S3-compatible servers from the
//! standard AWS variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), or `gs://bucket/prefix` (`GOOGLE_APPLICATION_CREDENTIALS` or
//! `GOOGLE_SERVICE_ACCOUNT`).
//!
//! Layout under the root:
//! ```text
//! sweeps/<sweep name>/sweep.yaml       the sweep file as run
//! sweeps/<sweep name>/trials.jsonl     one line per trial: id, variant, overrides, seed, params, flops
//! trials/<trial id>/config.json        the complete model config
//! trials/<trial id>/metrics.jsonl      the runner's metrics
//! trials/<trial id>/model.safetensors  final weights
//! trials/<trial id>/cpu.pb             CPU profile (pprof protobuf), with `profile: true`
//! trials/<trial id>/stdout.log, stderr.log
//! trials/<trial id>/attempt.json       the orchestrator's record of the last attempt (status, exit code, attempts)
//! trials/<trial id>/summary.json       the runner's summary, written last
//! ```
//! Every object is written whole (the local store writes a temporary file and renames it), so a
//! reader never sees half a file, and a trial's state can be derived from storage alone.

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage {root}: {message}")]
    Root { root: String, message: String },
    #[error("storage {path}: {source}")]
    Io {
        path: String,
        source: object_store::Error,
    },
}

#[derive(Clone)]
pub struct Storage {
    pub root: String,
    store: Arc<dyn ObjectStore>,
}

/// What storage says about a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    New,
    Done,
    Failed,
    Interrupted,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::New => "new",
            TrialState::Done => "done",
            TrialState::Failed => "failed",
            TrialState::Interrupted => "interrupted",
        }
    }
}

impl Storage {
    pub fn open(root: &str) -> Result<Storage, StorageError> {
        let fail = |message: String| StorageError::Root {
            root: root.into(),
            message,
        };
        let store: Arc<dyn ObjectStore> = match root.split_once("://") {
            Some(("s3", rest)) | Some(("gs", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(fail(
                        "the URL has no bucket (use s3://bucket/prefix)".into(),
                    ));
                }
                let inner: Arc<dyn ObjectStore> = if root.starts_with("s3") {
                    Arc::new(
                        object_store::aws::AmazonS3Builder::from_env()
                            .with_bucket_name(bucket)
                            .build()
                            .map_err(|e| fail(format!("{e} (set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ENDPOINT_URL for S3-compatible servers)")))?,
                    )
                } else {
                    Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(bucket)
                            .build()
                            .map_err(|e| {
                                fail(format!("{e} (set GOOGLE_APPLICATION_CREDENTIALS)"))
                            })?,
                    )
                };
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() {
                    inner
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(inner, prefix))
                }
            }
            Some(("file", dir)) | Some(("", dir)) => Self::local(dir).map_err(fail)?,
            Some((scheme, _)) => {
                return Err(fail(format!(
                    "unknown storage scheme {scheme}:// (use a folder, s3:// or gs://)"
                )));
            }
            None => Self::local(root).map_err(fail)?,
        };
        Ok(Storage {
            root: root.into(),
            store,
        })
    }

    fn local(dir: &str) -> Result<Arc<dyn ObjectStore>, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        Ok(Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| e.to_string())?,
        ))
    }

    fn path(key: &str) -> ObjectPath {
        ObjectPath::from(key)
    }

    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(&Self::path(key), PutPayload::from(Bytes::from(data)))
            .await
            .map(|_| ())
            .map_err(|source| StorageError::Io {
                path: key.into(),
                source,
            })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.store.get(&Self::path(key)).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|source| StorageError::Io {
                        path: key.into(),
                        source,
                    })?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StorageError::Io {
                path: key.into(),
                source,
            }),
        }
    }

    pub async fn get_json(&self, key: &str) -> Result<Option<serde_json::Value>, StorageError> {
        Ok(self
            .get(key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Names of the "folders" directly under `prefix`.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&Self::path(prefix)))
            .await
            .map_err(|source| StorageError::Io {
                path: prefix.into(),
                source,
            })?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The state of a trial, from its `summary.json` and `attempt.json`.
    pub async fn trial_state(&self, id: &str) -> Result<TrialState, StorageError> {
        if let Some(s) = self.get_json(&format!("trials/{id}/summary.json")).await? {
            return Ok(match s["status"].as_str() {
                Some("completed") => TrialState::Done,
                Some("interrupted") => TrialState::Interrupted,
                _ => TrialState::Failed,
            });
        }
        if let Some(a) = self.get_json(&format!("trials/{id}/attempt.json")).await? {
            return Ok(if a["status"] == "interrupted" {
                TrialState::Interrupted
            } else {
                TrialState::Failed
            });
        }
        Ok(TrialState::New)
    }
}
