//! Weights as safetensors: float32 tensors named by the IR's stable weight names (`embed`, `head`,
//! `final_norm`, `blocks.{i}.{name}`), with the config name and hash in the metadata. Writes go to a
//! temporary file that is renamed into place, so a reader never sees half a file.

use mixsweep_model::ir::WeightSpec;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: tensor `{name}` {message}")]
    Tensor {
        path: String,
        name: String,
        message: String,
    },
}

pub fn save(
    path: &Path,
    specs: &[WeightSpec],
    values: &[Vec<f32>],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let err = |message: String| CheckpointError::File {
        path: path.display().to_string(),
        message,
    };
    let bytes: Vec<Vec<u8>> = values
        .iter()
        .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = specs
        .iter()
        .zip(&bytes)
        .map(|(s, b)| {
            TensorView::new(StDtype::F32, s.shape.clone(), b)
                .map(|v| (s.name.clone(), v))
                .map_err(|e| err(format!("tensor {}: {e}", s.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = safetensors::serialize(views, Some(metadata)).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create folder: {e}")))?;
    }
    let tmp = path.with_extension("safetensors.partial");
    std::fs::write(&tmp, data).map_err(|e| err(format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot rename into place: {e}")))
}

/// Loads every weight of `specs` by name, checking dtype and shape; extra tensors are an error too,
/// so a checkpoint of a different model is never half-loaded.
pub fn load(path: &Path, specs: &[WeightSpec]) -> Result<Vec<Vec<f32>>, CheckpointError> {
    let p = path.display().to_string();
    let data = std::fs::read(path).map_err(|e| CheckpointError::File {
        path: p.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let st = safetensors::SafeTensors::deserialize(&data).map_err(|e| CheckpointError::File {
        path: p.clone(),
        message: format!("not a safetensors file: {e}"),
    })?;
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let t = st.tensor(&s.name).map_err(|_| CheckpointError::Tensor {
            path: p.clone(),
            name: s.name.clone(),
            message: "is missing (the checkpoint was saved from a different model config)".into(),
        })?;
        if t.dtype() != StDtype::F32 {
            return Err(CheckpointError::Tensor {
                path: p.clone(),
                name: s.name.clone(),
                message: format!("has dtype {:?}; only F32 is supported", t.dtype()),
            });
        }
        if t.shape() != s.shape.as_slice() {
            return Err(CheckpointError::Tensor {
                path: p.clone(),
                name: s.name.clone(),
                message: format!(
                    "has shape {:?} but the config needs {:?}",
                    t.shape(),
                    s.shape
                ),
            });
        }
        out.push(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    if let Some(extra) = st.names().into_iter().find(|n| !known.contains(&n[..])) {
        return Err(CheckpointError::Tensor {
            path: p,
            name: extra.to_string(),
            message: "is not a weight of this config".into(),
        });
    }
    Ok(out)
}

/// The metadata of a safetensors file.
pub fn metadata(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    let err = |message: String| CheckpointError::File {
        path: path.display().to_string(),
        message,
    };
    let data = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&data)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}
