//! The `fdgr` command-line tool as a library: data loading, the CPU and GPU
//! backends, training with checkpoints, sweeps, benchmarks, export and the
//! paper's experiments, and the exit codes ([`exit`]). The binary
//! (`src/main.rs`) only parses and dispatches, to one module per command
//! in `src/cli/` (its flags and its printing).

#![recursion_limit = "256"]

pub mod arch;
pub mod augment;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod device;
pub mod device_live;
pub mod dist;
pub mod dln;
pub mod exit;
pub mod firmware;
pub mod flood;
pub mod fold;
pub mod gpu;
pub mod memory;
pub mod plot;
pub mod sweep;
pub mod train;
