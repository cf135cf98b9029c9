//! Weights as safetensors: float32 tensors named by the IR's stable weight names (`embed`, `head`,
//! `final_norm`, `blocks.{i}.{name}`), with the config name and hash in the metadata. Writes go to a
//! temporary file that is renamed into place, so a reader never sees half a file. Quantized exports
//! ([`save_quantized`]) hold `I8` tensors with an `F32` `<name>.scale` per row; [`load`] dequantizes
//! them, so quantized weights can be evaluated and generated from.

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
    let tensors = specs
        .iter()
        .zip(values)
        .map(|(s, v)| (s.name.clone(), StDtype::F32, s.shape.clone(), f32_bytes(v)))
        .collect();
    write(path, tensors, metadata)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Weights quantized per row (see [`crate::quantize`]); tensors the scheme does not apply to stay F32.
pub fn save_quantized(
    path: &Path,
    specs: &[WeightSpec],
    values: &[Vec<f32>],
    scheme: &crate::quantize::Scheme,
    mut metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut tensors = vec![];
    for (s, v) in specs.iter().zip(values) {
        if !crate::quantize::Scheme::applies(&s.shape) {
            tensors.push((s.name.clone(), StDtype::F32, s.shape.clone(), f32_bytes(v)));
            continue;
        }
        let q = crate::quantize::quantize(v, s.shape[1], scheme, s.name.contains("embed"));
        tensors.push((
            s.name.clone(),
            StDtype::I8,
            s.shape.clone(),
            q.q.iter().map(|x| *x as u8).collect(),
        ));
        tensors.push((
            format!("{}.scale", s.name),
            StDtype::F32,
            vec![s.shape[0]],
            f32_bytes(&q.scales),
        ));
    }
    metadata.insert("quantize".into(), scheme.bits.to_string());
    metadata.insert("quant_method".into(), scheme.method.to_string());
    metadata.insert("quant_k".into(), scheme.k.to_string());
    metadata.insert("quant_k_embed".into(), scheme.k_embed.to_string());
    write(path, tensors, metadata)
}

type Tensor = (String, StDtype, Vec<usize>, Vec<u8>);

fn write(
    path: &Path,
    tensors: Vec<Tensor>,
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let err = |message: String| CheckpointError::File {
        path: path.display().to_string(),
        message,
    };
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, b)| {
            TensorView::new(*dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(format!("tensor {name}: {e}")))
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
        if t.dtype() != StDtype::F32 && t.dtype() != StDtype::I8 {
            return Err(CheckpointError::Tensor {
                path: p.clone(),
                name: s.name.clone(),
                message: format!(
                    "has dtype {:?}; F32 (or I8 with a .scale tensor) is supported",
                    t.dtype()
                ),
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
        if t.dtype() == StDtype::I8 {
            out.push(dequantized(&st, &p, s, t.data())?);
            continue;
        }
        out.push(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    let mut known: std::collections::HashSet<String> =
        specs.iter().map(|s| s.name.clone()).collect();
    known.extend(specs.iter().map(|s| format!("{}.scale", s.name)));
    if let Some(extra) = st.names().into_iter().find(|n| !known.contains(*n)) {
        return Err(CheckpointError::Tensor {
            path: p,
            name: extra.to_string(),
            message: "is not a weight of this config".into(),
        });
    }
    Ok(out)
}

/// An `I8` tensor times its per-row `<name>.scale`.
fn dequantized(
    st: &safetensors::SafeTensors<'_>,
    path: &str,
    s: &WeightSpec,
    data: &[u8],
) -> Result<Vec<f32>, CheckpointError> {
    let err = |message: &str| CheckpointError::Tensor {
        path: path.to_string(),
        name: format!("{}.scale", s.name),
        message: message.to_string(),
    };
    let scale = st
        .tensor(&format!("{}.scale", s.name))
        .map_err(|_| err("is missing (an I8 tensor needs its per-row scales)"))?;
    if scale.dtype() != StDtype::F32 || scale.shape() != [s.shape[0]] {
        return Err(err(&format!("must be F32 of shape [{}]", s.shape[0])));
    }
    let scales: Vec<f32> = scale
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let q = crate::quantize::Quantized {
        q: data.iter().map(|b| *b as i8).collect(),
        scales,
    };
    Ok(crate::quantize::dequantize(&q, s.shape[1]))
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
