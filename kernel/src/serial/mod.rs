//! The serial loops of the layer primitives beyond dense products:
//! activations and per-channel sums, convolution, batch normalization and
//! pooling, over NCHW slices. They
//! are the reference implementation (the default methods of
//! [`crate::Exec`]) that a microcontroller runs as is and that the host's
//! parallel executor and the GPU are checked against.

pub mod act;
pub mod conv;
pub mod norm;
pub mod pool;
pub mod vecops;

pub use conv::ConvGeom;
pub use norm::BnGeom;
pub use pool::{PoolGeom, PoolKind};
