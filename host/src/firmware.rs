//! The files firmware reads, written once for `fdgr export`, `fdgr samples`
//! and `fdgr device run`: a model in the kernel's FDGR format
//! ([`fdgr_kernel::export`], version 2: the layer list, θ and the running
//! statistics) and a sample stream ([`fdgr_kernel::stream`]: per sample its
//! values as bytes, then the label).

use crate::checkpoint::{self, NetFile};
use crate::data::{self, DataOptions, Normalize};
use anyhow::{anyhow, bail, Result};
use fdgr_kernel::export;
use fdgr_kernel::stream::{self, StreamError};
use std::path::Path;

/// The FDGR file of a network read from a run directory or a model file.
pub fn export_bytes(net: &NetFile, name: &Path) -> Result<Vec<u8>> {
    let a = &net.arch;
    let n = export::file_len_v2(a.layers.len(), net.theta.len(), net.state.len());
    let mut buf = vec![0u8; n];
    let n = export::encode_v2(
        &a.layers,
        a.model.input,
        a.model.loss,
        &net.theta,
        &net.state,
        &mut buf,
    )
    .map_err(|e| anyhow!("{}: {e}", name.display()))?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads the network of `ckpt` (a run directory or a model file) and its
/// FDGR file, batch norm folded into the layer before it where it can be
/// ([`crate::fold`]; with `must_fold`, a batch norm that cannot be folded
/// is an error — a device does not train batch norm — else it stays, with
/// its running statistics): the returned network is the one the file
/// holds.
pub fn export_run(ckpt: &Path, must_fold: bool) -> Result<(NetFile, Vec<u8>)> {
    let mut net = checkpoint::load_net(ckpt)?;
    let folded = match crate::fold::fold(&net.arch, &net.theta, &net.state) {
        Ok(f) => f,
        Err(e) if must_fold => {
            bail!("{}: {e:#}", checkpoint::model_path(ckpt).display())
        }
        Err(_) => None,
    };
    if let Some((arch, theta)) = folded {
        net = NetFile {
            arch,
            theta,
            state: vec![],
            tracked: 0,
            pre: net.pre,
        };
    }
    let bytes = export_bytes(&net, ckpt)?;
    Ok((net, bytes))
}

/// Which samples a stream takes: the first `count` of a split of a data
/// set, as stored (no normalisation).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSpec {
    /// Data set (`--data` syntax).
    pub data: String,
    /// `test` or `train`.
    pub split: String,
    /// How many (the first ones, in file order).
    pub count: usize,
    /// Split seed (as in training).
    pub seed: u64,
    /// Test fraction (as in training).
    pub test_frac: f64,
}

/// A sample stream: its bytes and the values per sample.
pub struct Stream {
    /// The stream file's bytes.
    pub bytes: Vec<u8>,
    /// Values per sample.
    pub features: usize,
}

/// The stream of `spec`: each value must be an integer 0..=255 as stored.
pub fn stream_bytes(spec: &StreamSpec) -> Result<Stream> {
    let d = data::load(
        &spec.data,
        &DataOptions {
            seed: spec.seed,
            test_frac: spec.test_frac,
            normalize: Normalize::None,
        },
    )?;
    let s = match spec.split.as_str() {
        "test" => &d.test,
        "train" => &d.train,
        s => bail!("--split {s}: expected test or train"),
    };
    if spec.count == 0 || spec.count > s.len() {
        bail!(
            "--count {}: the {} split has {} samples",
            spec.count,
            spec.split,
            s.len()
        );
    }
    let f = d.features;
    let mut out = vec![0u8; spec.count * stream::record_len(f)];
    let mut at = 0;
    for (i, &y) in s.y.iter().enumerate().take(spec.count) {
        at += match stream::write_sample(&s.x[i * f..(i + 1) * f], y, &mut out[at..]) {
            Ok(n) => n,
            Err(StreamError::NotAByte(v)) => bail!(
                "--data {}: value {v} is not a byte (samples need integer values 0..=255)",
                spec.data
            ),
            Err(e) => bail!("--data {}: {e}", spec.data),
        };
    }
    Ok(Stream {
        bytes: out,
        features: f,
    })
}
