//! The live image's flash: the last 128 KiB of the nRF52840's 1 MiB
//! (0x000E_0000..0x0010_0000, 32 pages of 4 KiB), which `memory.x` keeps
//! out of the program (region `STORE`). Offsets are relative to
//! 0x000E_0000; the store makes two slots of 64 KiB (16 pages) of it.
//!
//! Through the NVMC: a page is erased by writing its address to ERASEPAGE
//! with CONFIG.WEN = Een, a word (32 bits) is programmed by writing it to
//! its address with CONFIG.WEN = Wen, each followed by a wait for READY;
//! reads are in place. The CPU halts while the NVMC works (about 85 ms per
//! page erase, 41 µs per word).

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use fdgr_firmware::flash::{check, check_erase, read_mapped, FlashError};
use nrf52840_pac::NVMC;

/// Address of the reserved region.
pub const BASE: usize = 0x000E_0000;
/// Bytes per page (the erase unit).
pub const PAGE: usize = 4096;
/// Bytes reserved: 32 pages.
pub const CAPACITY: usize = 32 * PAGE;
/// Program granularity: a word.
const WORD: usize = 4;

// The learned state (θ and the optimizer's two state vectors, f32) and the
// record's header, meta block and commit (under 128 bytes) fit one slot.
const _: () = assert!(
    4 * (fdgr_firmware::TP + 2 * fdgr_firmware::NSTATE) + 128 <= CAPACITY / 2,
    "the learned state does not fit half of the reserved flash: reserve more in memory.x and src/flash.rs"
);

extern "C" {
    // The reserved region's bounds, from `memory.x`.
    static __fdgr_store_start: u8;
    static __fdgr_store_end: u8;
}

/// The reserved pages, through the NVMC.
pub struct Pages {
    nvmc: NVMC,
}

impl Pages {
    /// Takes the NVMC (left read-only between operations), after checking
    /// that `memory.x` reserves the pages this driver writes.
    pub fn new(nvmc: NVMC) -> Pages {
        let start = &raw const __fdgr_store_start as usize;
        let end = &raw const __fdgr_store_end as usize;
        if (start, end) != (BASE, BASE + CAPACITY) {
            defmt::panic!(
                "memory.x reserves {=usize:#x}..{=usize:#x}, the flash driver writes {=usize:#x}..{=usize:#x}",
                start,
                end,
                BASE,
                BASE + CAPACITY
            );
        }
        Pages { nvmc }
    }

    fn wait(&self) {
        while self.nvmc.ready.read().ready().is_busy() {}
    }
}

impl ErrorType for Pages {
    type Error = FlashError;
}

impl ReadNorFlash for Pages {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        // SAFETY: the reserved pages are memory-mapped flash that is always
        // readable and only changes through this driver's `&mut self`.
        unsafe { read_mapped(BASE, CAPACITY, offset, bytes) }
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for Pages {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let at = check_erase(from, to, PAGE, CAPACITY)?;
        self.wait();
        self.nvmc.config.write(|w| w.wen().een());
        for page in (BASE + at..BASE + to as usize).step_by(PAGE) {
            // SAFETY: ERASEPAGE takes the address of a page; `page` is one
            // of the reserved pages (checked above).
            self.nvmc
                .erasepage()
                .write(|w| unsafe { w.erasepage().bits(page as u32) });
            self.wait();
        }
        self.nvmc.config.write(|w| w.wen().ren());
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let at = check(offset, bytes.len(), WORD, CAPACITY)?;
        self.wait();
        self.nvmc.config.write(|w| w.wen().wen());
        for (i, word) in bytes.chunks_exact(WORD).enumerate() {
            let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            let addr = (BASE + at + i * WORD) as *mut u32;
            // SAFETY: `addr` is a word-aligned address inside the reserved
            // pages (checked above), which the linker leaves unused; with
            // CONFIG.WEN = Wen, a word write there programs it.
            unsafe { core::ptr::write_volatile(addr, v) };
            // The write must reach the NVMC before READY is read.
            cortex_m::asm::dsb();
            self.wait();
        }
        self.nvmc.config.write(|w| w.wen().ren());
        Ok(())
    }
}
