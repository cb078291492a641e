//! Files a run writes, all atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash at any moment leaves either the old
//! or the new file, never half of one.
//!
//! * `model.safetensors`: the weights as a PyTorch `nn.Sequential` of
//!   `Linear` layers stores them: `0.weight` `[out, in]`, `0.bias` `[out]`,
//!   `2.weight`, … (activations sit at the odd indices), f32.
//! * `checkpoint.safetensors`: the same tensors, the momentum buffer
//!   (`momentum.0.weight`, …) and, in the metadata, everything else needed
//!   to resume bit-exactly: configuration, epoch, step counters, the RNG
//!   state of the data order, and the metrics history.

use crate::config::{dims_str, TrainConfig};
use anyhow::{bail, Context, Result};
use fdgr_kernel::{Act, Loss, Shape};
use safetensors::{Dtype, SafeTensors};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("atomic_write: path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    Ok(())
}

/// One epoch's metrics (a line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// Epoch number, 1-based.
    pub epoch: u64,
    /// Optimizer steps so far.
    pub step: u64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Loss on the training split (full pass after the epoch).
    pub train_loss: f64,
    /// Accuracy on the training split.
    pub train_acc: f64,
    /// Loss on the test split.
    pub test_loss: f64,
    /// Accuracy on the test split.
    pub test_acc: f64,
    /// Wall time since the start of the run (training and evaluation).
    pub seconds: f64,
}

/// Resumable training state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Completed epochs.
    pub epoch: u64,
    /// Completed steps.
    pub step: u64,
    /// Optimizer updates applied (PyTorch momentum initialisation).
    pub sgd_steps: u64,
    /// Data-order RNG state at the start of the next epoch.
    pub rng: u64,
    /// Metrics of the completed epochs.
    pub history: Vec<EpochRecord>,
    /// Wall time of the completed epochs.
    pub seconds: f64,
}

fn layer_names(shape: &Shape, prefix: &str) -> Vec<(String, Vec<usize>, usize, usize)> {
    let mut v = vec![];
    for l in 1..=shape.layers() {
        let (o, i) = (shape.dim(l), shape.dim(l - 1));
        let off = shape.weight_offset(l);
        let idx = 2 * (l - 1);
        v.push((format!("{prefix}{idx}.weight"), vec![o, i], off, o * i));
        v.push((format!("{prefix}{idx}.bias"), vec![o], off + o * i, o));
    }
    v
}

fn model_meta(shape: &Shape) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), "fdgr-mlp".to_string()),
        ("dims".to_string(), dims_str(shape.dims())),
        ("act".to_string(), shape.act.name().to_string()),
        ("loss".to_string(), shape.loss.name().to_string()),
    ])
}

/// Serialises tensors to the safetensors format with sorted metadata keys,
/// so the same weights always give the same bytes.
fn serialize(
    shape: &Shape,
    theta: &[f32],
    momentum: Option<&[f32]>,
    mut meta: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    if theta.iter().any(|t| !t.is_finite()) {
        bail!("refusing to save non-finite weights");
    }
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = vec![];
    for (name, dims, off, n) in layer_names(shape, "") {
        tensors.push((name, dims, &theta[off..off + n]));
    }
    if let Some(m) = momentum {
        for (name, dims, off, n) in layer_names(shape, "momentum.") {
            tensors.push((name, dims, &m[off..off + n]));
        }
    }
    meta.extend(model_meta(shape));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(&meta)?);
    let mut offset = 0usize;
    for (name, dims, data) in &tensors {
        let end = offset + 4 * data.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": dims, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut h = serde_json::to_string(&serde_json::Value::Object(header))?.into_bytes();
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, _, data) in &tensors {
        for x in data.iter() {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(out)
}

/// Writes `model.safetensors`-style weights.
pub fn save_model(path: &Path, shape: &Shape, theta: &[f32]) -> Result<()> {
    atomic_write(path, &serialize(shape, theta, None, BTreeMap::new())?)
}

fn read_tensors(
    st: &SafeTensors<'_>,
    shape: &Shape,
    prefix: &str,
    name: &str,
    out: &mut [f32],
) -> Result<()> {
    for (tname, dims, off, n) in layer_names(shape, prefix) {
        let t = st.tensor(&tname).with_context(|| {
            format!("{name}: tensor {tname} missing (expected for model {shape})")
        })?;
        if t.dtype() != Dtype::F32 {
            bail!(
                "{name}: tensor {tname} has dtype {:?}, expected F32",
                t.dtype()
            );
        }
        if t.shape() != dims.as_slice() {
            bail!(
                "{name}: tensor {tname} has shape {:?}, expected {dims:?} for model {shape}",
                t.shape()
            );
        }
        for (o, c) in out[off..off + n].iter_mut().zip(t.data().chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    if let Some(bad) = out.iter().position(|v| !v.is_finite()) {
        bail!("{name}: parameter {bad} is NaN or infinite");
    }
    Ok(())
}

fn shape_from_meta(meta: &HashMap<String, String>, name: &str) -> Result<Shape> {
    let get = |k: &str| {
        meta.get(k)
            .with_context(|| format!("{name}: metadata '{k}' missing (not an fdgr model file?)"))
    };
    let dims = crate::config::parse_dims(get("dims")?)
        .with_context(|| format!("{name}: bad metadata 'dims'"))?;
    let act = Act::from_name(get("act")?).with_context(|| format!("{name}: bad metadata 'act'"))?;
    let loss =
        Loss::from_name(get("loss")?).with_context(|| format!("{name}: bad metadata 'loss'"))?;
    Shape::try_new(&dims, act, loss).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// The model file of a run directory or a file path.
pub fn model_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("model.safetensors")
    } else {
        p.to_path_buf()
    }
}

/// Reads a `model.safetensors` (or checkpoint) written by fdgr.
pub fn load_model(path: &Path) -> Result<(Shape, Vec<f32>)> {
    let path = model_path(path);
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).with_context(|| format!("{name}: cannot read"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{name}: not a valid safetensors file ({e})"))?;
    let (_, md) = SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let meta = md.metadata().clone().unwrap_or_default();
    let shape = shape_from_meta(&meta, &name)?;
    let mut theta = vec![0.0f32; shape.param_count()];
    read_tensors(&st, &shape, "", &name, &mut theta)?;
    Ok((shape, theta))
}

/// Writes `dir/checkpoint.safetensors`.
pub fn save_checkpoint(
    dir: &Path,
    state: &TrainState,
    shape: &Shape,
    theta: &[f32],
    momentum: Option<&[f32]>,
) -> Result<()> {
    let meta = BTreeMap::from([("fdgr-state".to_string(), serde_json::to_string(state)?)]);
    atomic_write(
        &dir.join("checkpoint.safetensors"),
        &serialize(shape, theta, momentum, meta)?,
    )
}

/// A checkpoint read back.
pub struct Loaded {
    /// Training state.
    pub state: TrainState,
    /// Model shape.
    pub shape: Shape,
    /// Parameters.
    pub theta: Vec<f32>,
    /// Momentum buffer (empty when the optimizer has none).
    pub momentum: Vec<f32>,
}

/// Reads `dir/checkpoint.safetensors`.
pub fn load_checkpoint(dir: &Path) -> Result<Loaded> {
    let path = dir.join("checkpoint.safetensors");
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{name}: cannot read (is {} a run directory?)",
            dir.display()
        )
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{name}: not a valid safetensors file ({e})"))?;
    let (_, md) = SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let meta = md.metadata().clone().unwrap_or_default();
    let shape = shape_from_meta(&meta, &name)?;
    let state: TrainState =
        serde_json::from_str(meta.get("fdgr-state").with_context(|| {
            format!("{name}: no training state (a model file, not a checkpoint?)")
        })?)
        .with_context(|| format!("{name}: corrupt training state"))?;
    let cfg_shape = state
        .config
        .shape()
        .with_context(|| format!("{name}: bad configuration"))?;
    if cfg_shape != shape {
        bail!("{name}: tensors are for model {shape} but the configuration says {cfg_shape}");
    }
    let mut theta = vec![0.0f32; shape.param_count()];
    read_tensors(&st, &shape, "", &name, &mut theta)?;
    let mut momentum = vec![];
    if state.config.momentum != 0.0 {
        momentum = vec![0.0f32; shape.param_count()];
        read_tensors(&st, &shape, "momentum.", &name, &mut momentum)?;
    }
    Ok(Loaded {
        state,
        shape,
        theta,
        momentum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metrics survive the checkpoint's JSON exactly (a resumed run's
    /// metrics.jsonl must equal an uninterrupted run's).
    #[test]
    fn history_round_trips_bit_exactly() {
        let mut x = 0.1f64;
        for i in 0..2000 {
            x = (x * 3.7 + 0.123456789).fract() * 10f64.powi(i % 7 - 3);
            let r = EpochRecord {
                epoch: i as u64,
                step: 0,
                lr: x,
                train_loss: x / 3.0,
                train_acc: 1.0 / (x + 1.0),
                test_loss: (x as f32) as f64,
                test_acc: x.sqrt(),
                seconds: x * 1e3,
            };
            let back: EpochRecord =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }
}
