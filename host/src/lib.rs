//! The `fdgr` command-line tool as a library: data loading, the CPU and GPU
//! backends, training with checkpoints, sweeps, benchmarks, export and the
//! paper's experiments. The binary (`src/main.rs`) is a thin clap layer.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod dln;
pub mod flood;
pub mod gpu;
pub mod plot;
pub mod sweep;
pub mod train;
