//! # fdgr-mcu
//!
//! The host side of on-device fine-tuning, shared by `fdgr device` (the
//! command that takes a trained run onto a board and brings the fine-tuned
//! model back) and `cargo xtask firmware` (CI's bit-identity check):
//!
//! * [`fw_config`]: the firmware's configuration, the very file the firmware
//!   compiles (hyper-parameters, methods, the checks of a model and a
//!   sample stream, the buffer lengths and their RAM);
//! * [`board`]: the boards of `firmware-examples/`, their memory maps
//!   (`memory.x`) and the cargo command that builds or runs one;
//! * [`memory`]: whether a model fits a board, before building (from the
//!   formula) and after (from the ELF);
//! * [`tools`]: the tools a board needs (rustup target, QEMU, probe-rs, a
//!   probe), each missing one named with how to get it;
//! * [`elf`]: flash and RAM of a firmware ELF;
//! * [`log`]: the defmt stream, decoded live, and what the firmware logged;
//! * [`process`]: commands run with a time limit, their output streamed;
//! * [`qemu`]: the emulated Cortex-M4F and the instruction-count plugin;
//! * [`profile`]: the plugin's per-address counts summed per function;
//! * [`replay`]: the host's run of the device's fine-tuning and the
//!   bit-for-bit comparison;
//! * [`session`]: the host end of the sample link to a live image.
#![deny(missing_docs)]

pub mod board;
pub mod elf;
pub mod log;
pub mod memory;
pub mod process;
pub mod profile;
pub mod qemu;
pub mod replay;
pub mod session;
pub mod tools;

/// The fine-tuning configuration the firmware is built with: the very file
/// the firmware compiles, so the host replays and checks with the same
/// numbers.
#[allow(dead_code)]
#[path = "../../firmware-examples/common/src/config.rs"]
pub mod fw_config;

/// Reads a file, naming it in the error.
pub fn read(p: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::fw_config;
    use fdgr_kernel::Hyper;

    /// Each hyper-parameter's build variable is `FDGR_` and its name in
    /// capitals, so a new one of the kernel's [`Hyper`] needs its variable.
    #[test]
    fn hyper_vars_follow_the_kernels_names() {
        for (var, name) in fw_config::HYPER_VARS.iter().zip(Hyper::<f32>::NAMES) {
            assert_eq!(*var, format!("FDGR_{}", name.to_uppercase()));
        }
    }

    /// The firmware offers every method of the kernel, each with the
    /// configuration's hyper-parameters, and its buffers hold its points.
    #[test]
    fn the_firmware_offers_every_method() {
        let names: Vec<&str> = fw_config::METHODS.iter().map(|m| m.name()).collect();
        assert_eq!(names, fdgr_kernel::Method::<f32>::names());
        for m in fw_config::METHODS {
            assert_eq!(fw_config::hyper(*m), m.hyper_or(fw_config::HYPER));
            assert_eq!(m.with_hyper(fw_config::HYPER), *m);
            assert!(m.scratch_vectors() <= 2, "{}", m.name());
        }
    }
}
