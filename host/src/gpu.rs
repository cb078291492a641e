//! The GPU backend adapter: `fdgr-gpu`'s trainer behind [`Backend`].

use crate::backend::Backend;
use crate::data::Dataset;
use anyhow::{bail, Result};
use fdgr_kernel::{Method, Sgd, Shape};

/// A GPU backend for `shape` holding the training split of `data`.
pub fn backend(
    shape: Shape,
    data: &Dataset,
    max_batch: usize,
    method: &Method<f32>,
    opt: &Sgd<f32>,
    tf32: bool,
) -> Result<Box<dyn Backend>> {
    let _ = (shape, data, max_batch, method, opt, tf32);
    bail!("GPU backend unavailable: this build has no GPU support yet")
}
