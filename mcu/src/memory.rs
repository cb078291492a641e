//! Whether a model fits a board: estimated before building, from the
//! firmware's buffer formula ([`fw_config::ram_bytes`]) and the board's
//! `memory.x`, and measured after, from the ELF.

use fdgr_kernel::finetune::Models;
use fdgr_kernel::Method;

use crate::board::{Board, MemoryMap};
use crate::elf::ElfInfo;
use crate::fw_config::{self, RamBytes};

/// Room left for the stack: the measured peak is about 2.2 KB
/// (RESULTS.md); a quarter of this.
pub const STACK_BYTES: u64 = 8 * 1024;
/// Flash for the code of an MLP's firmware: about 48–60 KB measured (the
/// kernel, defmt, the runtime; Adam builds the most).
pub const CODE_BYTES: u64 = 64 * 1024;
/// Flash for the code of a conv net's firmware (the kernel's `conv`
/// feature: convolution, batch-norm and pooling layers): about 108 KB
/// measured.
pub const CONV_CODE_BYTES: u64 = 112 * 1024;

/// What a fine-tuning firmware is expected to need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// fdgr's buffers ([`fw_config::ram_bytes`], the fine-tuner at its
    /// bound).
    pub fdgr: RamBytes,
    /// All RAM: fdgr's buffers, the firmware's other statics
    /// ([`Board::static_overhead`]) and the stack ([`STACK_BYTES`]).
    pub ram: u64,
    /// All flash: code ([`CODE_BYTES`], or [`CONV_CODE_BYTES`] for a conv
    /// net), the model (4 bytes per parameter) and the sample stream.
    pub flash: u64,
    /// The code's part of [`Estimate::flash`].
    pub code: u64,
}

/// The estimate for fine-tuning the planned `models` (the model in its
/// mode: [`fw_config::plan`]) with `method` and the optimizer `opt` (an
/// index of [`fw_config::OPTIMIZER_NAMES`]) on a stream of `stream_bytes`
/// on `board`.
pub fn estimate(
    models: &Models,
    method: Method<f32>,
    opt: usize,
    stream_bytes: usize,
    board: Board,
) -> Estimate {
    let opt_state = if opt == 0 { 0 } else { 2 };
    let lens = fw_config::buffer_lens(models, method, opt_state);
    let fdgr = fw_config::ram_bytes(&lens, fw_config::tuner_bytes_max(models.inputs()));
    let code = if models.uses_conv() {
        CONV_CODE_BYTES
    } else {
        CODE_BYTES
    };
    Estimate {
        fdgr,
        ram: fdgr.total as u64 + board.static_overhead() + STACK_BYTES,
        flash: code + 4 * models.params() as u64 + stream_bytes as u64,
        code,
    }
}

/// `Ok` when the estimate fits `map`; else why not, with what would fit.
pub fn check_estimate(e: &Estimate, map: &MemoryMap, board: Board) -> Result<(), String> {
    let mut bad = vec![];
    if e.ram > map.ram {
        bad.push(format!(
            "about {} B of RAM (fdgr's buffers {} B: θ {} + d {} + point {} + optimizer state {} + workspace {} + batch {} + fine-tuner {}; \
             other statics {} B; stack {} B), the board has {} B",
            e.ram,
            e.fdgr.total,
            e.fdgr.theta,
            e.fdgr.dir,
            e.fdgr.point,
            e.fdgr.state,
            e.fdgr.ws,
            e.fdgr.batch,
            e.fdgr.tuner,
            board.static_overhead(),
            STACK_BYTES,
            map.ram
        ));
    }
    if e.flash > map.flash {
        bad.push(format!(
            "about {} B of flash (code {} B + model and samples {} B), the board has {} B",
            e.flash,
            e.code,
            e.flash - e.code,
            map.flash
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; and "))
    }
}

/// `Ok` when a built firmware fits `map` (its flash, and its static RAM
/// with [`STACK_BYTES`] of stack).
pub fn check_elf(e: &ElfInfo, map: &MemoryMap) -> Result<(), String> {
    let mut bad = vec![];
    if e.ram + STACK_BYTES > map.ram {
        bad.push(format!(
            "{} B of static RAM + {STACK_BYTES} B of stack > {} B of RAM",
            e.ram, map.ram
        ));
    }
    if e.flash > map.flash {
        bad.push(format!("{} B of flash > {} B", e.flash, map.flash));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::finetune::{models, Mode};
    use fdgr_kernel::{Act, Loss, Shape};

    #[test]
    fn the_shipped_model_fits_every_board_and_a_wide_one_only_qemu() {
        let fw = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-examples");
        let small = Shape::new(&[64, 32, 10], Act::Tanh, Loss::SoftmaxCe);
        let wide = Shape::new(&[64, 512, 10], Act::Tanh, Loss::SoftmaxCe);
        let fgr = fw_config::method("fgr").unwrap();
        for b in Board::ALL {
            let map = b.memory(&fw).unwrap();
            let e = estimate(&models(&small, Mode::Full).unwrap(), fgr, 0, 64 * 65, b);
            // The README's figure: 30,100 B of fdgr buffers with the
            // fine-tuner's 584 B; the estimate bounds the fine-tuner.
            assert_eq!(e.fdgr.total - e.fdgr.tuner, 30_100 - 584);
            assert!(check_estimate(&e, &map, b).is_ok(), "{b}");
            let w = estimate(&models(&wide, Mode::Full).unwrap(), fgr, 0, 64 * 65, b);
            assert_eq!(
                check_estimate(&w, &map, b).is_ok(),
                b.name() == "qemu-m4",
                "{b}"
            );
            // Its last layer alone fits everywhere.
            let l = estimate(
                &models(&wide, Mode::LAST_LAYER).unwrap(),
                fgr,
                0,
                64 * 65,
                b,
            );
            assert!(check_estimate(&l, &map, b).is_ok(), "{b}");
        }
        let e = ElfInfo {
            flash: 70_000,
            ram: 31_000,
            marker: None,
        };
        let map = MemoryMap {
            flash: 65_536,
            ram: 32_768,
        };
        let msg = check_elf(&e, &map).unwrap_err();
        assert!(msg.contains("RAM") && msg.contains("flash"), "{msg}");
    }
}
