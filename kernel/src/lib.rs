//! # fdgr-kernel
//!
//! A `no_std`, no-heap core for training neural networks with
//! finite-difference gradient regularization (F-GR, Karakida et al.,
//! ICML 2023) and its relatives, on anything from a Cortex-M0+ to a server.
//!
//! The structure is one idea: a training method is maths on parameter
//! vectors around calls of "loss and gradient at θ on this batch".
//!
//! * [`Objective`] (+ [`VecSpace`]): what a backend implements. Here:
//!   [`Mlp`] (fixed-size [`FixedMlp`] or run-time-shaped over caller
//!   memory) and the diagonal linear network [`dln::Dln`].
//! * [`method`]: `sgd`, `db`, `fgr`, `bgr`, `cgr`, `sam`, `usam`, `flood`,
//!   each one function over `Objective`; [`step`] adds the optimizer.
//! * [`optim`]: PyTorch-exact SGD (momentum, Nesterov, weight decay) and
//!   learning-rate schedules.
//!
//! ```
//! use fdgr_kernel::*;
//!
//! const SHAPE: Shape = Shape::new(&[4, 8, 3], Act::Tanh, Loss::SoftmaxCe);
//! const P: usize = SHAPE.param_count();
//! const W: usize = SHAPE.workspace_len(2, false);
//!
//! let mut theta = [0.0f32; P];
//! for (i, t) in theta.iter_mut().enumerate() {
//!     *t = ((i * 7 % 13) as f32 - 6.0) * 0.05;
//! }
//! let (mut dir, mut point) = ([0.0f32; P], [0.0f32; P]);
//! let x = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2];
//! let y = [2u32, 0];
//!
//! let mut net: FixedMlp<f32, W> = Mlp::fixed(SHAPE).unwrap();
//! net.set_batch(&x, Targets::Classes(&y)).unwrap();
//! let method = Method::Fgr { gamma: 0.05, eps: 0.1 };
//! let mut state = SgdState::default();
//! let mut losses = [0.0f32; 20];
//! for l in losses.iter_mut() {
//!     let bufs = Buffers { theta: &mut theta[..], dir: &mut dir[..], state: [None, None],
//!                          point: Some(&mut point[..]), point2: None, correction: None };
//!     *l = step(&mut net, &method, &Sgd::plain(), &mut state, 0.5, bufs).unwrap();
//! }
//! assert!(losses[19] < losses[0]);
//! ```
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod crc;
pub mod dist;
pub mod dln;
pub mod error;
pub mod export;
pub mod finetune;
pub mod link;
pub mod loss;
pub mod method;
pub mod mlp;
pub mod model;
pub mod net;
pub mod objective;
pub mod ops;
pub mod optim;
pub mod real;
pub mod ring;
pub mod rng;
pub mod serial;
pub mod shape;
pub mod store;
pub mod stream;

pub use error::Error;
pub use loss::{Loss, Targets};
pub use method::{step, step_with, Ascent, Buffers, Hyper, Method, StepOptions};
pub use mlp::{FixedMlp, Mlp};
pub use model::{Dims, Layer, Model, Node, Op, Src};
pub use net::{Batch, CpuMem, CpuNet, Memory, Net};
pub use objective::{Exec, Objective, Pass, Serial, SliceSpace, VecSpace};
pub use optim::{
    Adam, OptElem, OptHyper, Optim, Optimizer, Schedule, ScheduleKind, Sgd, SgdElem, SgdState,
};
pub use real::Real;
pub use ring::{LossHistory, Sample, SampleRing};
pub use rng::{init_mlp, init_params, Rng};
pub use serial::act::Act;
pub use shape::{Shape, MAX_LAYERS};
