//! Files a run writes, all atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash at any moment leaves either the old
//! or the new file, never half of one.
//!
//! * `model.safetensors`: the weights under the names of the equivalent
//!   PyTorch module ([`crate::arch`]): an MLP as `nn.Sequential` of
//!   `Linear` layers (`0.weight` `[out, in]`, `0.bias`, `2.weight`, …),
//!   a ResNet as `conv1.weight`, `bn1.running_mean`,
//!   `layer1.0.conv1.weight`, … with every batch norm's
//!   `num_batches_tracked` (I64); f32 otherwise. The metadata describes
//!   the network, so the file alone rebuilds it.
//! * `checkpoint.safetensors`: the same tensors, the optimizer's state
//!   (`momentum.<name>`; Adam: `exp_avg.<name>`, `exp_avg_sq.<name>`),
//!   amortized GR's stored correction (`gr_correction.<name>`) and, in the
//!   metadata, everything else needed
//!   to resume bit-exactly: configuration, epoch, step counters, the RNG
//!   state of the data order, and the metrics history.

use crate::arch::Arch;
use crate::config::{dims_str, TrainConfig};
use anyhow::{anyhow, bail, Context, Result};
use fdgr_kernel::{Act, Dims, Loss, Shape};
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
    /// Training loss: the mean over the epoch's mini-batches of the loss
    /// at θ before each step (training mode), as PyTorch loops log it;
    /// an eval-mode pass over the training split where the backend keeps
    /// no step metrics (GPU) and for epoch 0.
    pub train_loss: f64,
    /// Training accuracy, the same way.
    pub train_acc: f64,
    /// `--eval-train`: loss of an eval-mode pass over the training split
    /// after the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_train_loss: Option<f64>,
    /// `--eval-train`: its accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_train_acc: Option<f64>,
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

/// The metadata that describes the network (enough to rebuild it
/// without the data): `fdgr.spec`, `fdgr.input` ([C, H, W]),
/// `fdgr.classes`, `fdgr.act`, `fdgr.layers` (the planned layer list, for
/// a PyTorch rebuild: `bench/torch_models.py`), `loss`; MLPs also keep
/// the keys of the first format (`format` fdgr-mlp, `dims`, `act`).
fn arch_meta(arch: &Arch) -> Result<BTreeMap<String, String>> {
    let d = arch.model.input;
    let mut m = BTreeMap::from([
        ("fdgr.spec".to_string(), arch.spec.clone()),
        (
            "fdgr.input".to_string(),
            format!("[{},{},{}]", d.c, d.h, d.w),
        ),
        ("fdgr.classes".to_string(), arch.outputs().to_string()),
        ("fdgr.act".to_string(), arch.act.name().to_string()),
        (
            "fdgr.layers".to_string(),
            serde_json::to_string(&arch.layers_json())?,
        ),
        ("loss".to_string(), arch.model.loss.name().to_string()),
    ]);
    match &arch.mlp {
        Some(shape) => {
            m.insert("format".to_string(), "fdgr-mlp".to_string());
            m.insert("dims".to_string(), dims_str(shape.dims()));
            m.insert("act".to_string(), shape.act.name().to_string());
        }
        None => {
            m.insert("format".to_string(), "fdgr-net".to_string());
        }
    }
    Ok(m)
}

/// The network a file's metadata describes.
fn arch_from_meta(meta: &HashMap<String, String>, name: &str) -> Result<Arch> {
    let get = |k: &str| {
        meta.get(k)
            .with_context(|| format!("{name}: metadata '{k}' missing (not an fdgr model file?)"))
    };
    if let Some(spec) = meta.get("fdgr.spec") {
        let input: Vec<usize> = serde_json::from_str(get("fdgr.input")?)
            .ok()
            .filter(|v: &Vec<usize>| v.len() == 3 && v.iter().all(|&x| x > 0))
            .with_context(|| format!("{name}: bad metadata 'fdgr.input' (expected [C,H,W])"))?;
        let classes: usize = get("fdgr.classes")?
            .parse()
            .ok()
            .filter(|&c| c > 0)
            .with_context(|| format!("{name}: bad metadata 'fdgr.classes'"))?;
        let act = Act::from_name(get("fdgr.act")?)
            .with_context(|| format!("{name}: bad metadata 'fdgr.act'"))?;
        let dims = Dims::new(input[0], input[1], input[2]);
        let arch = Arch::parse(spec, act, dims, classes).map_err(|e| {
            anyhow!(
                "{name}: the metadata (fdgr.input {input:?}, fdgr.classes {classes}) describe no \
                 valid model: {e:#}"
            )
        })?;
        if arch.outputs() != classes {
            bail!(
                "{name}: metadata 'fdgr.classes' is {classes} but model {} has {} outputs",
                arch.spec,
                arch.outputs()
            );
        }
        if arch.model.input != dims {
            bail!(
                "{name}: metadata 'fdgr.input' is {input:?} but model {} takes {}x{}x{} inputs",
                arch.spec,
                arch.model.input.c,
                arch.model.input.h,
                arch.model.input.w
            );
        }
        return Ok(arch);
    }
    // the first format: an MLP described by its widths
    let dims = crate::config::parse_dims(get("dims")?)
        .with_context(|| format!("{name}: bad metadata 'dims'"))?;
    let act = Act::from_name(get("act")?).with_context(|| format!("{name}: bad metadata 'act'"))?;
    if Loss::from_name(get("loss")?) != Some(Loss::SoftmaxCe) {
        bail!("{name}: bad metadata 'loss' (expected ce)");
    }
    Arch::mlp(&dims, act).map_err(|e| anyhow!("{name}: {e:#}"))
}

/// One tensor to write: name, shape, dtype and little-endian bytes.
struct Out {
    name: String,
    shape: Vec<usize>,
    dtype: &'static str,
    bytes: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises a network's tensors (parameters, running statistics and
/// their `num_batches_tracked`, and parameter-shaped `extra` vectors as
/// `<prefix>.<name>`: the optimizer's state, GR's correction) to the
/// safetensors format, metadata keys sorted, so the same weights always
/// give the same bytes.
fn serialize(
    arch: &Arch,
    w: &Weights<'_>,
    extra: &[(&str, &[f32])],
    mut meta: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    if w.theta.iter().chain(w.state).any(|t| !t.is_finite()) {
        bail!("refusing to save non-finite weights");
    }
    let mut tensors: Vec<Out> = vec![];
    for t in arch.params() {
        tensors.push(Out {
            bytes: f32_bytes(&w.theta[t.offset..t.offset + t.len]),
            name: t.name,
            shape: t.shape,
            dtype: "F32",
        });
    }
    let (bufs, counters) = arch.buffers();
    for t in bufs {
        tensors.push(Out {
            bytes: f32_bytes(&w.state[t.offset..t.offset + t.len]),
            name: t.name,
            shape: t.shape,
            dtype: "F32",
        });
    }
    for c in counters {
        tensors.push(Out {
            name: c,
            shape: vec![],
            dtype: "I64",
            bytes: (w.tracked as i64).to_le_bytes().to_vec(),
        });
    }
    for (prefix, m) in extra {
        for t in arch.params() {
            tensors.push(Out {
                bytes: f32_bytes(&m[t.offset..t.offset + t.len]),
                name: format!("{prefix}.{}", t.name),
                shape: t.shape,
                dtype: "F32",
            });
        }
    }
    meta.extend(arch_meta(arch)?);
    if let Some(p) = w.pre {
        meta.insert("fdgr.preprocess".into(), serde_json::to_string(p)?);
    }
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(&meta)?);
    let mut offset = 0usize;
    for t in &tensors {
        let end = offset + t.bytes.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
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
    for t in &tensors {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

/// The weights of a network: θ, the running statistics (empty without
/// batch norm) and the count of batches they were tracked over.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Parameters.
    pub theta: &'a [f32],
    /// Running statistics ([`Arch::buffers`] order).
    pub state: &'a [f32],
    /// `num_batches_tracked`.
    pub tracked: u64,
    /// How the inputs were split and scaled (`fdgr.preprocess`), where
    /// known.
    pub pre: Option<&'a crate::data::Preprocess>,
}

/// Writes `model.safetensors`-style weights (PyTorch names, so the file
/// loads into the equivalent module with `load_state_dict(strict=True)`).
pub fn save_model(path: &Path, arch: &Arch, w: &Weights<'_>) -> Result<()> {
    atomic_write(path, &serialize(arch, w, &[], BTreeMap::new())?)
}

/// Checks that the file holds every tensor of `arch` (parameters under
/// each of `prefixes`, then the running statistics) as F32 of the right
/// shape, before anything is sized from the metadata: a file whose
/// metadata describes a larger network than its tensors is refused
/// without allocating (θ then fits in the file's own bytes).
fn check_tensors(st: &SafeTensors<'_>, arch: &Arch, prefixes: &[String], name: &str) -> Result<()> {
    let (bufs, _) = arch.buffers();
    let params = arch.params();
    let all = prefixes
        .iter()
        .flat_map(|p| {
            params
                .iter()
                .map(move |t| (format!("{p}{}", t.name), &t.shape))
        })
        .chain(bufs.iter().map(|t| (t.name.clone(), &t.shape)));
    for (tname, dims) in all {
        f32_tensor(st, &tname, dims, arch, name)?;
    }
    Ok(())
}

/// Reads the tensors of `arch` (with an optional name prefix) into θ.
fn read_params(
    st: &SafeTensors<'_>,
    arch: &Arch,
    prefix: &str,
    name: &str,
    out: &mut [f32],
) -> Result<()> {
    for t in arch.params() {
        read_f32(
            st,
            &format!("{prefix}{}", t.name),
            &t.shape,
            arch,
            name,
            &mut out[t.offset..t.offset + t.len],
        )?;
    }
    if let Some(bad) = out.iter().position(|v| !v.is_finite()) {
        bail!("{name}: parameter {bad} is NaN or infinite");
    }
    Ok(())
}

/// Tensor `tname` of the file, checked: present, F32, of shape `dims`.
fn f32_tensor<'a>(
    st: &'a SafeTensors<'_>,
    tname: &str,
    dims: &[usize],
    arch: &Arch,
    name: &str,
) -> Result<safetensors::tensor::TensorView<'a>> {
    let t = st.tensor(tname).with_context(|| {
        format!(
            "{name}: tensor {tname} missing (expected for model {})",
            arch.spec
        )
    })?;
    if t.dtype() != Dtype::F32 {
        bail!(
            "{name}: tensor {tname} has dtype {:?}, expected F32",
            t.dtype()
        );
    }
    if t.shape() != dims {
        bail!(
            "{name}: tensor {tname} has shape {:?}, expected {dims:?} for model {}",
            t.shape(),
            arch.spec
        );
    }
    Ok(t)
}

fn read_f32(
    st: &SafeTensors<'_>,
    tname: &str,
    dims: &[usize],
    arch: &Arch,
    name: &str,
    out: &mut [f32],
) -> Result<()> {
    let t = f32_tensor(st, tname, dims, arch, name)?;
    for (o, c) in out.iter_mut().zip(t.data().chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    Ok(())
}

/// Reads the running statistics and `num_batches_tracked` of `arch`.
fn read_state(st: &SafeTensors<'_>, arch: &Arch, name: &str) -> Result<(Vec<f32>, u64)> {
    let mut state = vec![0.0f32; arch.model.sizes.state];
    let (bufs, counters) = arch.buffers();
    for t in &bufs {
        read_f32(
            st,
            &t.name,
            &t.shape,
            arch,
            name,
            &mut state[t.offset..t.offset + t.len],
        )?;
    }
    if let Some(bad) = state.iter().position(|v| !v.is_finite()) {
        bail!("{name}: running statistic {bad} is NaN or infinite");
    }
    for t in bufs.iter().filter(|t| t.name.ends_with("running_var")) {
        let v = &state[t.offset..t.offset + t.len];
        if let Some(i) = v.iter().position(|&x| x < 0.0) {
            bail!(
                "{name}: tensor {} holds a negative variance ({} at channel {i}); a variance is ≥ 0",
                t.name,
                v[i]
            );
        }
    }
    let mut tracked = 0;
    for c in counters {
        let t = st
            .tensor(&c)
            .with_context(|| format!("{name}: tensor {c} missing"))?;
        if t.dtype() != Dtype::I64 || !t.shape().is_empty() || t.data().len() != 8 {
            bail!("{name}: tensor {c}: expected an I64 scalar");
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(t.data());
        let v = i64::from_le_bytes(b);
        if v < 0 {
            bail!("{name}: tensor {c} is negative");
        }
        tracked = v as u64;
    }
    Ok((state, tracked))
}

/// Writes what `fdgr eval --dump` evaluated: `x` [N, C, H, W] (f32),
/// `y` \[N\] (I64), `logits` \[N, K\] (f32), with the network's metadata.
pub fn save_eval_dump(
    path: &Path,
    arch: &Arch,
    x: &[f32],
    y: &[u32],
    logits: &[f32],
) -> Result<()> {
    let d = arch.model.input;
    let n = y.len();
    let tensors = [
        ("x", vec![n, d.c, d.h, d.w], "F32", f32_bytes(x)),
        (
            "y",
            vec![n],
            "I64",
            y.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
        ),
        ("logits", vec![n, arch.outputs()], "F32", f32_bytes(logits)),
    ];
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(arch_meta(arch)?)?,
    );
    let mut offset = 0usize;
    for (name, shape, dtype, bytes) in &tensors {
        let end = offset + bytes.len();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}),
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
    for (_, _, _, bytes) in &tensors {
        out.extend_from_slice(bytes);
    }
    atomic_write(path, &out)
}

/// The model file of a run directory or a file path.
pub fn model_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("model.safetensors")
    } else {
        p.to_path_buf()
    }
}

/// A network and its weights, read from a file.
pub struct NetFile {
    /// The network.
    pub arch: Arch,
    /// Parameters.
    pub theta: Vec<f32>,
    /// Running statistics.
    pub state: Vec<f32>,
    /// `num_batches_tracked`.
    pub tracked: u64,
    /// How the run split and scaled its data (`fdgr.preprocess`; `None`
    /// in files written before it was stored).
    pub pre: Option<crate::data::Preprocess>,
}

/// The stored preprocessing of a file's metadata.
fn preprocess_of(
    meta: &HashMap<String, String>,
    name: &str,
) -> Result<Option<crate::data::Preprocess>> {
    meta.get("fdgr.preprocess")
        .map(|v| {
            serde_json::from_str(v)
                .with_context(|| format!("{name}: bad metadata 'fdgr.preprocess'"))
        })
        .transpose()
}

fn open<'a>(bytes: &'a [u8], name: &str) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{name}: not a valid safetensors file ({e})"))?;
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok((st, md.metadata().clone().unwrap_or_default()))
}

/// Reads a `model.safetensors` (or checkpoint) written by fdgr: any network.
pub fn load_net(path: &Path) -> Result<NetFile> {
    let path = model_path(path);
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).with_context(|| format!("{name}: cannot read"))?;
    let (st, meta) = open(&bytes, &name)?;
    let arch = arch_from_meta(&meta, &name)?;
    check_tensors(&st, &arch, &[String::new()], &name)?;
    crate::memory::check(
        &format!("{name}: evaluating model {}", arch.spec),
        crate::memory::eval_bytes(&arch),
    )?;
    let mut theta = vec![0.0f32; arch.param_count()];
    read_params(&st, &arch, "", &name, &mut theta)?;
    let (state, tracked) = read_state(&st, &arch, &name)?;
    let pre = preprocess_of(&meta, &name)?;
    Ok(NetFile {
        arch,
        theta,
        state,
        tracked,
        pre,
    })
}

/// Reads an MLP's `model.safetensors` (or checkpoint): its shape and θ.
pub fn load_model(path: &Path) -> Result<(Shape, Vec<f32>)> {
    let f = load_net(path)?;
    let shape = f.arch.mlp.with_context(|| {
        format!(
            "{}: model {} is not an MLP given by its widths",
            model_path(path).display(),
            f.arch.spec
        )
    })?;
    Ok((shape, f.theta))
}

/// The names of an optimizer's state vectors in a checkpoint (PyTorch's
/// state keys): SGD `momentum` (when μ > 0), Adam `exp_avg` and
/// `exp_avg_sq`.
pub fn opt_state_names(cfg: &TrainConfig) -> &'static [&'static str] {
    fdgr_kernel::Optim::state_names(&cfg.optimizer())
}

/// Writes `dir/checkpoint.safetensors`: the weights, the optimizer's state
/// vectors (`opt_state`, one after the other, named by
/// [`opt_state_names`]) and amortized GR's correction (`gr_correction`).
pub fn save_checkpoint(
    dir: &Path,
    state: &TrainState,
    arch: &Arch,
    w: &Weights<'_>,
    opt_state: &[f32],
    correction: &[f32],
) -> Result<()> {
    let meta = BTreeMap::from([("fdgr-state".to_string(), serde_json::to_string(state)?)]);
    let p = arch.param_count();
    let names = opt_state_names(&state.config);
    if opt_state.len() != names.len() * p || !(correction.is_empty() || correction.len() == p) {
        bail!("checkpoint: optimizer state or correction of the wrong size");
    }
    let mut extra: Vec<(&str, &[f32])> = names
        .iter()
        .zip(opt_state.chunks_exact(p.max(1)))
        .map(|(n, v)| (*n, v))
        .collect();
    if !correction.is_empty() {
        extra.push(("gr_correction", correction));
    }
    atomic_write(
        &dir.join("checkpoint.safetensors"),
        &serialize(arch, w, &extra, meta)?,
    )
}

/// A checkpoint read back.
pub struct Loaded {
    /// Training state.
    pub state: TrainState,
    /// The network.
    pub arch: Arch,
    /// Parameters.
    pub theta: Vec<f32>,
    /// The optimizer's state vectors, one after the other.
    pub opt_state: Vec<f32>,
    /// Amortized GR's correction (empty when not amortized).
    pub correction: Vec<f32>,
    /// Running statistics.
    pub bn_state: Vec<f32>,
    /// `num_batches_tracked`.
    pub tracked: u64,
}

/// Weights to start training from (`fdgr train --init FILE`).
#[derive(Clone, Debug)]
pub struct InitWeights {
    /// Parameters, in the network's order.
    pub theta: Vec<f32>,
    /// Batch-norm running statistics.
    pub state: Vec<f32>,
    /// `num_batches_tracked`.
    pub tracked: u64,
    /// Which file tensor each of the network's tensors came from, where
    /// its name differed.
    pub renamed: Vec<(String, String)>,
}

/// The names a tensor of the network may have in a file written by other
/// code: its own (fdgr's, which are PyTorch's `nn.Sequential` and CIFAR
/// ResNet names), with a `module.` or `model.` prefix, torchvision's
/// `downsample` for `shortcut`, and for the last layer `fc`, `linear`,
/// `classifier` or `head`.
fn aliases(name: &str, last: Option<&str>) -> Vec<String> {
    let (base, suffix) = name.rsplit_once('.').unwrap_or((name, ""));
    let mut bases = vec![base.to_string()];
    if base.contains("shortcut") {
        bases.push(base.replace("shortcut", "downsample"));
    }
    if last == Some(base) {
        for b in ["fc", "linear", "classifier", "head"] {
            if b != base {
                bases.push(b.to_string());
            }
        }
    }
    let mut out = vec![];
    for prefix in ["", "module.", "model."] {
        for b in &bases {
            out.push(format!("{prefix}{b}.{suffix}"));
        }
    }
    out
}

/// Reads initial weights for `arch` from a safetensors file written by
/// fdgr or by PyTorch (`safetensors.torch.save_file(model.state_dict())`):
/// every parameter and running statistic by its name or an alias (a
/// `module.`/`model.` prefix, `downsample` for `shortcut`, the last layer
/// as `fc`, `linear`, `classifier` or `head`), F32 (F64 is converted), of
/// exactly the network's shape. Every missing, extra or mis-shaped tensor is named in
/// one error.
pub fn load_init(path: &Path, arch: &Arch) -> Result<InitWeights> {
    let name = path.display().to_string();
    if let Ok(m) = std::fs::metadata(path) {
        crate::memory::check(&format!("{name}: reading the file"), Some(m.len()))?;
    }
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{name}: not a valid safetensors file ({e})"))?;
    let last = arch.params().last().map(|t| {
        t.name
            .rsplit_once('.')
            .map_or(t.name.clone(), |(b, _)| b.to_string())
    });
    let (bufs, counters) = arch.buffers();
    let mut theta = vec![0.0f32; arch.param_count()];
    let mut state = vec![0.0f32; arch.model.sizes.state];
    let mut used = std::collections::BTreeSet::new();
    let (mut problems, mut renamed) = (vec![], vec![]);
    let wanted = arch
        .params()
        .into_iter()
        .map(|t| (t, true))
        .chain(bufs.into_iter().map(|t| (t, false)));
    for (t, is_param) in wanted {
        let found = aliases(&t.name, last.as_deref())
            .into_iter()
            .find(|n| st.tensor(n).is_ok());
        let Some(fname) = found else {
            problems.push(format!("{} {:?} missing", t.name, t.shape));
            continue;
        };
        let tv = st
            .tensor(&fname)
            .map_err(|e| anyhow!("{name}: {fname}: {e}"))?;
        if tv.shape() != t.shape.as_slice() {
            problems.push(format!(
                "{fname} has shape {:?}, expected {:?}",
                tv.shape(),
                t.shape
            ));
            used.insert(fname);
            continue;
        }
        let out = if is_param {
            &mut theta[t.offset..t.offset + t.len]
        } else {
            &mut state[t.offset..t.offset + t.len]
        };
        let data = tv.data();
        match tv.dtype() {
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F64 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    *o = f64::from_le_bytes(b) as f32;
                }
            }
            d => {
                problems.push(format!("{fname} has dtype {d:?}, expected F32 or F64"));
            }
        }
        if fname != t.name {
            renamed.push((t.name.clone(), fname.clone()));
        }
        used.insert(fname);
    }
    let mut tracked = 0u64;
    for c in &counters {
        if let Some(fname) = aliases(c, None).into_iter().find(|n| st.tensor(n).is_ok()) {
            if let Ok(tv) = st.tensor(&fname) {
                if tv.dtype() == Dtype::I64 && tv.data().len() == 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(tv.data());
                    tracked = u64::try_from(i64::from_le_bytes(b)).unwrap_or(0);
                }
            }
            used.insert(fname);
        }
    }
    let extra: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n) && !n.ends_with("num_batches_tracked"))
        .map(str::to_string)
        .collect();
    if !extra.is_empty() {
        let mut e = extra;
        e.sort();
        problems.push(format!("not in model {}: {}", arch.spec, e.join(", ")));
    }
    if !problems.is_empty() {
        bail!(
            "{name}: does not fit model {} ({} problem(s)): {}",
            arch.spec,
            problems.len(),
            problems.join("; ")
        );
    }
    if let Some(bad) = theta.iter().chain(&state).position(|v| !v.is_finite()) {
        bail!("{name}: value {bad} is NaN or infinite");
    }
    for t in arch
        .buffers()
        .0
        .iter()
        .filter(|t| t.name.ends_with("running_var"))
    {
        if state[t.offset..t.offset + t.len].iter().any(|&v| v < 0.0) {
            bail!("{name}: {} holds a negative variance", t.name);
        }
    }
    Ok(InitWeights {
        theta,
        state,
        tracked,
        renamed,
    })
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
    let (st, meta) = open(&bytes, &name)?;
    let arch = arch_from_meta(&meta, &name)?;
    let state: TrainState =
        serde_json::from_str(meta.get("fdgr-state").with_context(|| {
            format!("{name}: no training state (a model file, not a checkpoint?)")
        })?)
        .with_context(|| format!("{name}: corrupt training state"))?;
    let d = arch.model.input;
    let cfg_arch = state
        .config
        .arch((d.c, d.h, d.w), arch.outputs())
        .with_context(|| format!("{name}: bad configuration"))?;
    if cfg_arch.layers != arch.layers {
        bail!(
            "{name}: tensors are for model {} but the configuration says {}",
            arch.spec,
            state.config.model
        );
    }
    let names = opt_state_names(&state.config);
    let mut prefixes = vec![String::new()];
    prefixes.extend(names.iter().map(|n| format!("{n}.")));
    if state.config.amortized() {
        prefixes.push("gr_correction.".to_string());
    }
    check_tensors(&st, &arch, &prefixes, &name)?;
    let mut theta = vec![0.0f32; arch.param_count()];
    read_params(&st, &arch, "", &name, &mut theta)?;
    let p = arch.param_count();
    let mut opt_state = vec![0.0f32; names.len() * p];
    for (n, v) in names.iter().zip(opt_state.chunks_exact_mut(p.max(1))) {
        read_params(&st, &arch, &format!("{n}."), &name, v)?;
    }
    let mut correction = vec![];
    if state.config.amortized() {
        correction = vec![0.0f32; p];
        read_params(&st, &arch, "gr_correction.", &name, &mut correction)?;
    }
    let (bn_state, tracked) = read_state(&st, &arch, &name)?;
    Ok(Loaded {
        state,
        arch,
        theta,
        opt_state,
        correction,
        bn_state,
        tracked,
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
                eval_train_loss: None,
                eval_train_acc: None,
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
