//! What only the xtask needs around the firmware cross-check: where it
//! keeps its outputs and installing QEMU. Everything the `fdgr device`
//! command shares with it (boards, defmt, ELF sizes, QEMU and its plugin,
//! the host replay) is in the `fdgr-mcu` crate.

use std::path::PathBuf;

use crate::util::root;

/// `firmware-examples/`.
pub fn fw_dir() -> PathBuf {
    root().join("firmware-examples")
}

/// Where the cross-check keeps what it produces (ignored by git).
pub fn out_dir() -> PathBuf {
    fw_dir().join("target").join("xtask")
}

/// Makes sure `qemu-system-arm` is on PATH: installs it with apt-get when
/// missing and running as root, fails otherwise (never skips).
pub fn ensure_qemu() -> Result<(), String> {
    crate::util::ensure_apt(
        "qemu-system-arm",
        "qemu-system-arm",
        "the firmware cross-check does not skip",
    )
}
