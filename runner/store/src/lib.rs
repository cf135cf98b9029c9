//! Object storage shared by the runner and the orchestrator, through `object_store`.
//!
//! A *root URL* is a local folder (`./mixsweep-runs`, `/abs/dir`, `file:///abs/dir`), `s3://bucket/prefix`
//! (credentials, region and an endpoint override for S3-compatible servers from the standard AWS variables:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`) or
//! `gs://bucket/prefix` (`GOOGLE_APPLICATION_CREDENTIALS` or `GOOGLE_SERVICE_ACCOUNT`).
//!
//! What it owns:
//! * [`Store`]: whole-object `put`/`get` under a root (the local store writes a temporary file and renames
//!   it, so a reader never sees half an object), listing.
//! * [`fetch`]: a data URL with a glob in its last component (`s3://b/data/train_*.bin`) downloaded into a
//!   local cache keyed by each object's key, size and ETag, so the runner reads remote shards like local
//!   ones and a second trial on the same machine downloads nothing.
//!
//! Everything is async; [`block_on`] runs one future on a private current-thread runtime for the
//! synchronous runner.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage {root}: {message}")]
    Root { root: String, message: String },
    #[error("storage {path}: {source}")]
    Io {
        path: String,
        source: object_store::Error,
    },
    #[error("{0}")]
    Local(String),
}

/// True for `s3://`, `gs://` and `file://` URLs (what [`Store::open`] and [`fetch`] read remotely).
pub fn is_url(s: &str) -> bool {
    s.starts_with("s3://") || s.starts_with("gs://") || s.starts_with("file://")
}

/// Storage under one root URL.
#[derive(Clone)]
pub struct Store {
    pub root: String,
    store: Arc<dyn ObjectStore>,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Key relative to the store's root.
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

impl Store {
    /// Opens a root URL (see the module docs) for writing. A local folder is created if missing.
    pub fn open(root: &str) -> Result<Store, StoreError> {
        Self::open_with(root, true)
    }

    /// Opens a root URL for reading only: a missing local folder is an error instead of being
    /// created (`status`, `results` and `plan` must not leave folders behind).
    pub fn open_existing(root: &str) -> Result<Store, StoreError> {
        Self::open_with(root, false)
    }

    fn open_with(root: &str, create: bool) -> Result<Store, StoreError> {
        let fail = |message: String| StoreError::Root {
            root: root.into(),
            message,
        };
        let store: Arc<dyn ObjectStore> = match root.split_once("://") {
            Some(("s3", rest)) | Some(("gs", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(fail(
                        "the URL has no bucket (use s3://bucket/prefix or gs://bucket/prefix)"
                            .into(),
                    ));
                }
                let inner: Arc<dyn ObjectStore> = if root.starts_with("s3") {
                    Arc::new(s3_builder(bucket).map_err(fail)?.build().map_err(|e| {
                        fail(format!("{e} (set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ENDPOINT_URL for S3-compatible servers)"))
                    })?)
                } else {
                    Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(bucket)
                            .with_retry(retry_config())
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
            Some(("file", dir)) => Self::local(dir, create).map_err(fail)?,
            Some((scheme, _)) => {
                return Err(fail(format!(
                    "unknown storage scheme {scheme}:// (use a folder, file://, s3:// or gs://)"
                )));
            }
            None => Self::local(root, create).map_err(fail)?,
        };
        Ok(Store {
            root: root.into(),
            store,
        })
    }

    fn local(dir: &str, create: bool) -> Result<Arc<dyn ObjectStore>, String> {
        if create {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
        } else if !Path::new(dir).is_dir() {
            return Err(format!("no such folder: {dir}"));
        }
        Ok(Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| e.to_string())?,
        ))
    }

    /// Whether this store is a local folder (no network, no credentials).
    pub fn is_local(&self) -> bool {
        !(self.root.starts_with("s3://") || self.root.starts_with("gs://"))
    }

    /// The URL of `key` under this root (for messages and for handing to another process).
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{}", self.root.trim_end_matches('/'), key)
    }

    fn io(key: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: key.into(),
            source,
        }
    }

    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(Bytes::from(data)))
            .await
            .map(|_| ())
            .map_err(Self::io(key))
    }

    /// Creates the object only if it does not exist yet; `Ok(false)` when it does. Atomic where the
    /// store supports conditional writes (local folders, S3 with `If-None-Match`, GCS); elsewhere a
    /// read-then-write.
    pub async fn put_if_absent(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        let payload = PutPayload::from(Bytes::from(data.clone()));
        match self
            .store
            .put_opts(&ObjectPath::from(key), payload, opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                if self.get(key).await?.is_some() {
                    return Ok(false);
                }
                self.put(key, data).await.map(|_| true)
            }
            Err(source) => Err(StoreError::Io {
                path: key.into(),
                source,
            }),
        }
    }

    /// Uploads a local file as one object; `Ok(false)` when the file does not exist.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<bool, StoreError> {
        match tokio::fs::read(file).await {
            Ok(bytes) => self.put(key, bytes).await.map(|_| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Local(format!(
                "cannot read {}: {e}",
                file.display()
            ))),
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Io {
                path: key.into(),
                source,
            }),
        }
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.get(&ObjectPath::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(Self::io(key))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: key.into(),
                source,
            }),
        }
    }

    /// The object parsed as JSON; `None` when missing or not JSON.
    pub async fn get_json(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .get(key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Names of the "folders" directly under `prefix`, sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&ObjectPath::from(prefix)))
            .await
            .map_err(Self::io(prefix))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Objects directly under `prefix` (no recursion), sorted by key.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<Object>, StoreError> {
        let prefix_path = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let listing = self
            .store
            .list_with_delimiter(prefix_path.as_ref())
            .await
            .map_err(Self::io(prefix))?;
        let mut objects: Vec<Object> = listing
            .objects
            .into_iter()
            .map(|m| Object {
                key: m.location.to_string(),
                size: m.size,
                e_tag: m.e_tag,
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Every object under `prefix`, recursively, sorted by key.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<Object>, StoreError> {
        let prefix_path = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let mut objects: Vec<Object> = self
            .store
            .list(prefix_path.as_ref())
            .map_ok(|m| Object {
                key: m.location.to_string(),
                size: m.size,
                e_tag: m.e_tag,
            })
            .try_collect()
            .await
            .map_err(Self::io(prefix))?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }
}

/// How long a storage request is retried before it fails: `MIXSWEEP_STORAGE_TIMEOUT` (a number of
/// seconds, default 180). Transient errors (connection refused, 5xx, throttling) are retried with
/// exponential backoff until then, however many attempts that takes.
pub fn storage_timeout() -> std::time::Duration {
    let secs = std::env::var("MIXSWEEP_STORAGE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(180.0);
    std::time::Duration::from_secs_f64(secs)
}

fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        // the timeout, not a count, bounds the retries
        max_retries: usize::MAX,
        retry_timeout: storage_timeout(),
    }
}

/// An S3 client from the standard AWS variables, refusing early (with the variables to set) when
/// no credentials are configured, instead of probing the EC2 instance-metadata endpoint unless
/// `MIXSWEEP_AWS_IMDS=1` / a web identity / a container credentials URI says to. `http://` endpoints
/// on loopback are allowed without `AWS_ALLOW_HTTP`.
fn s3_builder(bucket: &str) -> Result<object_store::aws::AmazonS3Builder, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let has_keys = var("AWS_ACCESS_KEY_ID").is_some() && var("AWS_SECRET_ACCESS_KEY").is_some();
    let has_other = [
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "MIXSWEEP_AWS_IMDS",
    ]
    .iter()
    .any(|k| var(k).is_some());
    if !has_keys && !has_other {
        return Err(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE; \
             on EC2 set MIXSWEEP_AWS_IMDS=1 to use the instance role)"
                .into(),
        );
    }
    if var("AWS_SECRET_ACCESS_KEY").is_some() && var("AWS_ACCESS_KEY_ID").is_none() {
        return Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into());
    }
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry_config());
    if let Some(endpoint) = var("AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT"))
        && let Some(rest) = endpoint.strip_prefix("http://")
    {
        {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            let loopback = host == "localhost"
                || host == "[::1]"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|a| a.is_loopback());
            if loopback {
                b = b.with_allow_http(true);
            } else if var("AWS_ALLOW_HTTP").is_none_or(|v| v != "true") {
                return Err(format!(
                    "AWS_ENDPOINT_URL {endpoint} is plain http:// on a non-loopback host: set AWS_ALLOW_HTTP=true to allow it \
                     (credentials and data travel unencrypted), or use https://"
                ));
            }
        }
    }
    Ok(b)
}

/// Splits a data URL into its folder URL and the glob of its last component:
/// `s3://b/data/train_*.bin` -> (`s3://b/data`, `train_*.bin`).
pub fn split_glob_url(url: &str) -> Result<(String, String), StoreError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StoreError::Local(format!("{url:?} is not a URL")))?;
    let Some((dir, pattern)) = rest.rsplit_once('/') else {
        return Err(StoreError::Local(format!(
            "{url:?} names a bucket but no files (use {scheme}://bucket/folder/train_*.bin)"
        )));
    };
    if dir.contains(['*', '?', '[']) {
        return Err(StoreError::Local(format!(
            "{url:?}: wildcards are only allowed in the last path component (the file name)"
        )));
    }
    Ok((format!("{scheme}://{dir}"), pattern.to_string()))
}

/// mixlab's rule for validation shards: the train glob (path or URL) with its first `train` replaced by
/// `val`, in the file-name part first, then anywhere. `None` when the glob holds no `train`.
pub fn derive_val_glob(train: &str) -> Option<String> {
    let (dir, file) = match train.rfind('/') {
        Some(i) => (&train[..=i], &train[i + 1..]),
        None => ("", train),
    };
    if file.contains("train") {
        return Some(format!("{dir}{}", file.replacen("train", "val", 1)));
    }
    train
        .contains("train")
        .then(|| train.replacen("train", "val", 1))
}

/// The objects a data URL names, sorted by key (keys relative to the folder URL).
pub async fn list_glob(url: &str) -> Result<(Store, Vec<Object>), StoreError> {
    let (dir, pattern) = split_glob_url(url)?;
    let store = Store::open(&dir)?;
    let matcher = glob::Pattern::new(&pattern)
        .map_err(|e| StoreError::Local(format!("invalid glob in {url:?}: {e}")))?;
    let objects = store
        .list_files("")
        .await?
        .into_iter()
        .filter(|o| matcher.matches(&o.key))
        .collect();
    Ok((store, objects))
}

/// A content-free identity of the objects a data URL names: keys, sizes and ETags.
pub async fn identity(url: &str) -> Result<String, StoreError> {
    let (_, objects) = list_glob(url).await?;
    if objects.is_empty() {
        return Err(StoreError::Local(format!("{url} matches no objects")));
    }
    let mut h = Sha256::new();
    h.update(url.as_bytes());
    for o in &objects {
        h.update(o.key.as_bytes());
        h.update(o.size.to_le_bytes());
        h.update(o.e_tag.as_deref().unwrap_or("").as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The file an interrupted training run leaves for `mixsweep-runner train --resume` (weights, optimizer
/// state, step), beside the run's other artifacts.
pub const RESUME_FILE: &str = "resume.safetensors";

/// Downloads `<prefix>/resume.safetensors` and the `metrics.jsonl` it continues from `store` into the
/// folder `out` (the runner's output folder); `false` when there is no resume point. Used by the runner
/// (`--resume` with `--artifacts`) and by the orchestrator's local backend.
pub async fn fetch_resume(store: &Store, prefix: &str, out: &Path) -> Result<bool, StoreError> {
    let key = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", prefix.trim_end_matches('/'))
        }
    };
    let Some(point) = store.get(&key(RESUME_FILE)).await? else {
        return Ok(false);
    };
    let write = |name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(out)
            .and_then(|_| std::fs::write(out.join(name), bytes))
            .map_err(|e| StoreError::Local(format!("{}: {e}", out.join(name).display())))
    };
    if let Some(metrics) = store.get(&key("metrics.jsonl")).await? {
        write("metrics.jsonl", &metrics)?;
    }
    write(RESUME_FILE, &point)?;
    Ok(true)
}

/// The default download cache: `$MIXSWEEP_CACHE`, else `$XDG_CACHE_HOME/mixsweep`, else
/// `~/.cache/mixsweep`, else the temp folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MIXSWEEP_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("mixsweep");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/mixsweep");
    }
    std::env::temp_dir().join("mixsweep-cache")
}

/// Downloads the objects a data URL names into `cache` (once per key+size+ETag) and returns the local
/// files, in key order, with their original file names. Each file is written to a temporary name and
/// renamed, so an interrupted download leaves nothing that looks complete.
pub async fn fetch(url: &str, cache: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let (store, objects) = list_glob(url).await?;
    if objects.is_empty() {
        return Err(StoreError::Local(format!(
            "{url} matches no objects (check the bucket, the folder and the file pattern)"
        )));
    }
    let (dir, _) = split_glob_url(url)?;
    let mut files = Vec::with_capacity(objects.len());
    for o in &objects {
        let mut h = Sha256::new();
        h.update(dir.as_bytes());
        h.update(o.key.as_bytes());
        h.update(o.size.to_le_bytes());
        h.update(o.e_tag.as_deref().unwrap_or("").as_bytes());
        let digest = format!("{:x}", h.finalize());
        let folder = cache.join("data").join(&digest[..16]);
        let name = o.key.rsplit('/').next().unwrap_or(&o.key);
        let local = folder.join(name);
        let fresh = std::fs::metadata(&local).is_ok_and(|m| m.len() == o.size);
        if !fresh {
            std::fs::create_dir_all(&folder).map_err(|e| {
                StoreError::Local(format!("cannot create {}: {e}", folder.display()))
            })?;
            let bytes = store.get(&o.key).await?.ok_or_else(|| {
                StoreError::Local(format!("{}/{} disappeared while downloading", dir, o.key))
            })?;
            let partial = folder.join(format!("{name}.partial"));
            std::fs::write(&partial, &bytes)
                .and_then(|_| std::fs::rename(&partial, &local))
                .map_err(|e| StoreError::Local(format!("cannot write {}: {e}", local.display())))?;
        }
        files.push(local);
    }
    Ok(files)
}

/// Runs one future to completion on a private current-thread runtime (for synchronous callers).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime starts")
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_urls_split_at_the_file_name() {
        assert_eq!(
            split_glob_url("s3://b/data/sh/train_*.bin").unwrap(),
            ("s3://b/data/sh".into(), "train_*.bin".into())
        );
        assert!(split_glob_url("s3://b").is_err());
        assert!(split_glob_url("s3://b/d*/x.bin").is_err());
    }

    #[test]
    fn local_store_round_trip_listing_and_fetch_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = Store::open(root.to_str().unwrap()).unwrap();
        block_on(async {
            store.put("d/train_0.bin", vec![1, 2, 3]).await.unwrap();
            store.put("d/train_1.bin", vec![4, 5]).await.unwrap();
            store.put("d/val_0.bin", vec![6]).await.unwrap();
            store.put("d/sub/x.bin", vec![7]).await.unwrap();
            assert_eq!(store.get("d/train_1.bin").await.unwrap(), Some(vec![4, 5]));
            assert_eq!(store.get("d/missing").await.unwrap(), None);
            assert_eq!(store.list_dirs("d").await.unwrap(), vec!["sub"]);
            assert_eq!(store.list_all("d").await.unwrap().len(), 4);
            let url = format!("file://{}/d/train_*.bin", root.display());
            let cache = dir.path().join("cache");
            let files = fetch(&url, &cache).await.unwrap();
            assert_eq!(files.len(), 2);
            assert_eq!(std::fs::read(&files[0]).unwrap(), vec![1, 2, 3]);
            assert!(files[1].ends_with("train_1.bin"));
            // a changed object gets a new cache entry; the same one is not downloaded again
            let id1 = identity(&url).await.unwrap();
            store.put("d/train_1.bin", vec![4, 5, 9]).await.unwrap();
            let again = fetch(&url, &cache).await.unwrap();
            assert_ne!(again[1], files[1]);
            assert_eq!(std::fs::read(&again[1]).unwrap(), vec![4, 5, 9]);
            assert_eq!(again[0], files[0]);
            assert_ne!(identity(&url).await.unwrap(), id1);
            let none = format!("file://{}/d/nothing_*.bin", root.display());
            assert!(
                fetch(&none, &cache)
                    .await
                    .unwrap_err()
                    .to_string()
                    .contains("matches no objects")
            );
        });
    }
}
