//! The live image's flash: sectors 6 and 7 of the STM32F411RE's internal
//! flash (0x0804_0000..0x0808_0000, 2 × 128 KiB), which `memory.x` keeps
//! out of the program (region `STORE`). Offsets are relative to the start
//! of sector 6; the store puts one slot in each sector.
//!
//! Programmed a word (32 bits) at a time through FLASH_CR's PG bit with
//! PSIZE = x32 (the parallelism for 2.7–3.6 V: the NUCLEO runs at 3.3 V),
//! erased a sector at a time (SER, SNB, STRT), read in place. The core
//! stalls on flash fetches while an operation runs (one bank), so the
//! waits below also hold the program: 1 to 2 s per 128 KiB sector erase.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use fdgr_firmware::flash::{check, check_erase, read_mapped, FlashError};
use stm32f4::stm32f411::FLASH;

/// Address of sector 6, the first reserved one.
pub const BASE: usize = 0x0804_0000;
/// Sector 6's number.
const FIRST_SECTOR: u8 = 6;
/// Bytes per sector (sectors 5 to 7).
pub const SECTOR: usize = 128 * 1024;
/// Bytes reserved: sectors 6 and 7.
pub const CAPACITY: usize = 2 * SECTOR;
/// Program granularity: a word (PSIZE = x32).
const WORD: usize = 4;

const KEY1: u32 = 0x4567_0123;
const KEY2: u32 = 0xCDEF_89AB;

// The learned state (θ and the optimizer's two state vectors, f32) and the
// record's header, meta block and commit (under 128 bytes) fit one slot.
const _: () = assert!(
    4 * (fdgr_firmware::TP + 2 * fdgr_firmware::NSTATE) + 128 <= CAPACITY / 2,
    "the learned state does not fit half of the reserved flash"
);

/// FLASH_SR's error flags (bits 1, 4 to 8).
const SR_ERRORS: u32 = 0b1_1111_0010;

/// Sectors 6 and 7, through the flash controller.
pub struct Sectors {
    flash: FLASH,
}

extern "C" {
    // The reserved region's bounds, from `memory.x`.
    static __fdgr_store_start: u8;
    static __fdgr_store_end: u8;
}

impl Sectors {
    /// Takes the flash controller (left locked between operations), after
    /// checking that `memory.x` reserves the sectors this driver writes.
    pub fn new(flash: FLASH) -> Sectors {
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
        Sectors { flash }
    }

    fn wait(&self) {
        while self.flash.sr().read().bsy().bit_is_set() {}
    }

    /// Unlocks FLASH_CR and clears the error flags of an earlier operation.
    fn unlock(&mut self) -> Result<(), FlashError> {
        self.wait();
        if self.flash.cr().read().lock().is_locked() {
            self.flash.keyr().write(|w| w.key().set(KEY1));
            self.flash.keyr().write(|w| w.key().set(KEY2));
        }
        if self.flash.cr().read().lock().is_locked() {
            return Err(FlashError::Locked);
        }
        self.flash.sr().write(|w| {
            w.operr()
                .clear()
                .wrperr()
                .clear()
                .pgaerr()
                .clear()
                .pgperr()
                .clear()
                .pgserr()
                .clear()
                .rderr()
                .clear()
        });
        Ok(())
    }

    fn lock(&mut self) {
        self.flash.cr().modify(|_, w| w.lock().locked());
    }

    /// Waits for the operation to end and reads its error flags.
    fn finish(&mut self) -> Result<(), FlashError> {
        self.wait();
        match self.flash.sr().read().bits() & SR_ERRORS {
            0 => Ok(()),
            e => Err(FlashError::Status(e)),
        }
    }

    /// After an erase or a program, the ART accelerator's data cache may
    /// still hold what the sector read before: reset it when it is on (it
    /// is off at reset, and this firmware leaves it off).
    fn flush_data_cache(&mut self) {
        if self.flash.acr().read().dcen().bit_is_set() {
            self.flash.acr().modify(|_, w| w.dcen().disabled());
            self.flash.acr().modify(|_, w| w.dcrst().reset());
            self.flash.acr().modify(|_, w| w.dcrst().no_reset());
            self.flash.acr().modify(|_, w| w.dcen().enabled());
        }
    }

    fn erase_sector(&mut self, sector: u8) -> Result<(), FlashError> {
        self.flash.cr().modify(|_, w| {
            // SAFETY: SNB takes a sector number; 6 and 7 exist on the
            // STM32F411xE (sectors 0 to 7).
            unsafe { w.snb().bits(sector) };
            w.psize().psize32().ser().sector_erase().pg().clear_bit()
        });
        self.flash.cr().modify(|_, w| w.strt().start());
        let r = self.finish();
        self.flash.cr().modify(|_, w| w.ser().clear_bit());
        r
    }

    fn program(&mut self, offset: usize, bytes: &[u8]) -> Result<(), FlashError> {
        self.flash
            .cr()
            .modify(|_, w| w.psize().psize32().ser().clear_bit().pg().program());
        let mut r = Ok(());
        for (i, word) in bytes.chunks_exact(WORD).enumerate() {
            let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            let at = (BASE + offset + i * WORD) as *mut u32;
            // SAFETY: `at` is a word-aligned address inside sectors 6 and 7
            // (checked by the caller), which the linker leaves unused; with
            // PG set, a word write there is a program request.
            unsafe { core::ptr::write_volatile(at, v) };
            // The write must reach the flash interface before BSY is read.
            cortex_m::asm::dsb();
            r = self.finish();
            if r.is_err() {
                break;
            }
        }
        self.flash.cr().modify(|_, w| w.pg().clear_bit());
        r
    }
}

impl ErrorType for Sectors {
    type Error = FlashError;
}

impl ReadNorFlash for Sectors {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        // SAFETY: the reserved sectors are memory-mapped flash that is always
        // readable and only changes through this driver's `&mut self`.
        unsafe { read_mapped(BASE, CAPACITY, offset, bytes) }
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for Sectors {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let at = check_erase(from, to, SECTOR, CAPACITY)?;
        self.unlock()?;
        let first = FIRST_SECTOR + (at / SECTOR) as u8;
        let n = ((to - from) as usize / SECTOR) as u8;
        let mut r = Ok(());
        for s in first..first + n {
            r = self.erase_sector(s);
            if r.is_err() {
                break;
            }
        }
        self.lock();
        self.flush_data_cache();
        r
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let at = check(offset, bytes.len(), WORD, CAPACITY)?;
        self.unlock()?;
        let r = self.program(at, bytes);
        self.lock();
        self.flush_data_cache();
        r
    }
}
