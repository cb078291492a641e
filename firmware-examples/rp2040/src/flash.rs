//! The live image's flash: the last 128 KiB of the Pico's 2 MiB QSPI flash
//! (flash offsets 0x1E_0000..0x20_0000, read through XIP at
//! 0x101E_0000..0x1020_0000, 32 sectors of 4 KiB), which `memory.x` keeps
//! out of the program (region `STORE`). Offsets are relative to its start;
//! the store makes two slots of 64 KiB (16 sectors) of it.
//!
//! Erased and programmed through the boot ROM's flash functions, as the
//! Pico SDK does: while they run the flash is not memory-mapped, so the
//! sequence (connect, leave XIP, erase or program, flush the XIP cache,
//! back to XIP through a copy of the second-stage bootloader) runs from RAM
//! ([`flash_op`]) with interrupts off; the second core stays in the boot
//! ROM, where it waits from reset. The chip programs 256-byte pages; the
//! store gets `WRITE_SIZE` 4 (it needs at most 32): each write is
//! programmed as whole pages with `0xFF` in the bytes it does not cover,
//! which leaves those bytes as they are (programming only clears bits).
//! Reads are through XIP, whose cache is flushed after every operation.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use fdgr_firmware::flash::{check, check_erase, read_mapped, FlashError};

/// Where the flash is memory-mapped (XIP, cached).
const XIP_BASE: usize = 0x1000_0000;
/// Flash offset of the reserved region.
pub const OFFSET: usize = 0x1E_0000;
/// Bytes per sector (the erase unit).
pub const SECTOR: usize = 4096;
/// Bytes reserved: 32 sectors.
pub const CAPACITY: usize = 32 * SECTOR;
/// Bytes per program operation of the chip.
const PAGE: usize = 256;
/// The write size the store sees.
const WORD: usize = 4;
/// The flash's 64 KiB block erase (the boot ROM uses it where a range
/// covers whole blocks, 4 KiB sector erases elsewhere).
const BLOCK_SIZE: u32 = 1 << 16;
const BLOCK_ERASE_CMD: u8 = 0xD8;

// The learned state (θ and the optimizer's two state vectors, f32) and the
// record's header, meta block and commit (under 128 bytes) fit one slot.
const _: () = assert!(
    4 * (fdgr_firmware::TP + 2 * fdgr_firmware::NSTATE) + 128 <= CAPACITY / 2,
    "the learned state does not fit half of the reserved flash: reserve more in memory.x and src/flash.rs"
);

/// A boot ROM function without arguments.
type RomFn = unsafe extern "C" fn();
/// `flash_range_erase(offset, count, block_size, block_cmd)`.
type EraseFn = unsafe extern "C" fn(u32, usize, u32, u8);
/// `flash_range_program(offset, data, count)`.
type ProgramFn = unsafe extern "C" fn(u32, *const u8, usize);

/// The boot ROM's flash functions (RP2040 datasheet §2.8.3.1.3).
struct Rom {
    connect_internal_flash: RomFn,
    flash_exit_xip: RomFn,
    flash_range_erase: EraseFn,
    flash_range_program: ProgramFn,
    flash_flush_cache: RomFn,
}

/// Looks up a boot ROM function by its two-letter code.
fn rom_func(code: &[u8; 2]) -> usize {
    // SAFETY: every RP2040 boot ROM keeps a 16-bit pointer to its function
    // table at 0x14 and one to `rom_table_lookup(table, code)` at 0x18
    // (datasheet §2.8.3); the ROM is always mapped and never changes.
    unsafe {
        let table = core::ptr::read_volatile(0x14 as *const u16) as usize as *const u16;
        let lookup = core::ptr::read_volatile(0x18 as *const u16) as usize;
        let lookup: unsafe extern "C" fn(*const u16, u32) -> usize = core::mem::transmute(lookup);
        lookup(table, u32::from(code[0]) | u32::from(code[1]) << 8)
    }
}

impl Rom {
    fn find() -> Rom {
        let f = |code: &[u8; 2]| {
            let a = rom_func(code);
            if a == 0 {
                defmt::panic!(
                    "the boot ROM has no function {=str}",
                    core::str::from_utf8(code).unwrap_or("?")
                );
            }
            a
        };
        // SAFETY: the lookup returned non-null addresses (Thumb bit set) of
        // the ROM functions with these codes, whose signatures are those of
        // the datasheet.
        unsafe {
            Rom {
                connect_internal_flash: core::mem::transmute::<usize, RomFn>(f(b"IF")),
                flash_exit_xip: core::mem::transmute::<usize, RomFn>(f(b"EX")),
                flash_range_erase: core::mem::transmute::<usize, EraseFn>(f(b"RE")),
                flash_range_program: core::mem::transmute::<usize, ProgramFn>(f(b"RP")),
                flash_flush_cache: core::mem::transmute::<usize, RomFn>(f(b"FC")),
            }
        }
    }
}

/// The flash operation itself, in RAM (`.data`, copied there at start):
/// from `connect_internal_flash` to the return of the second-stage
/// bootloader, nothing may be fetched from flash, so this calls only the
/// ROM and the bootloader's copy in RAM. `page` is null for an erase of
/// `len` bytes at flash offset `at`, else `len` bytes to program there.
///
/// # Safety
///
/// Interrupts off, the other core not running from flash, `at` and `len`
/// aligned to the sector (erase) or page (program), `page` (if not null)
/// and `boot2` in RAM, `boot2` a copy of the second-stage bootloader.
#[inline(never)]
#[link_section = ".data.fdgr_flash_op"]
unsafe extern "C" fn flash_op(rom: &Rom, boot2: *const u32, at: u32, page: *const u8, len: usize) {
    (rom.connect_internal_flash)();
    (rom.flash_exit_xip)();
    if page.is_null() {
        (rom.flash_range_erase)(at, len, BLOCK_SIZE, BLOCK_ERASE_CMD);
    } else {
        (rom.flash_range_program)(at, page, len);
    }
    (rom.flash_flush_cache)();
    // Back to fast XIP: the bootloader's copy returns when called with a
    // return address (the Thumb bit set on its address).
    let enter_xip = core::mem::transmute::<usize, RomFn>(boot2 as usize | 1);
    enter_xip();
}

extern "C" {
    // The reserved region's bounds, from `memory.x`.
    static __fdgr_store_start: u8;
    static __fdgr_store_end: u8;
}

/// The reserved sectors, through the boot ROM.
pub struct Sectors {
    rom: Rom,
    /// The second-stage bootloader (the first 256 bytes of flash), copied
    /// to RAM: it puts the flash back in fast XIP mode after an operation.
    boot2: [u32; 64],
}

impl Sectors {
    /// Finds the ROM functions and copies the bootloader, after checking
    /// that `memory.x` reserves the sectors this driver writes.
    pub fn new() -> Sectors {
        let start = &raw const __fdgr_store_start as usize;
        let end = &raw const __fdgr_store_end as usize;
        let base = XIP_BASE + OFFSET;
        if (start, end) != (base, base + CAPACITY) {
            defmt::panic!(
                "memory.x reserves {=usize:#x}..{=usize:#x}, the flash driver writes {=usize:#x}..{=usize:#x}",
                start,
                end,
                base,
                base + CAPACITY
            );
        }
        let mut boot2 = [0u32; 64];
        for (i, w) in boot2.iter_mut().enumerate() {
            // SAFETY: the first 256 bytes of flash, mapped at XIP_BASE,
            // readable (this code runs from XIP).
            *w = unsafe { core::ptr::read_volatile((XIP_BASE as *const u32).add(i)) };
        }
        Sectors {
            rom: Rom::find(),
            boot2,
        }
    }

    fn run(&mut self, at: usize, page: *const u8, len: usize) {
        let (rom, boot2) = (&self.rom, self.boot2.as_ptr());
        cortex_m::interrupt::free(|_| {
            // SAFETY: interrupts are off, core 1 waits in the boot ROM (this
            // firmware never starts it), `at` and `len` are aligned (checked
            // by the callers), `page` and `boot2` are on the stack, in RAM.
            unsafe { flash_op(rom, boot2, at as u32, page, len) }
        });
    }
}

impl ErrorType for Sectors {
    type Error = FlashError;
}

impl ReadNorFlash for Sectors {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        // SAFETY: the reserved sectors as mapped by XIP, always readable
        // outside `flash_op`, and only changed through this driver's
        // `&mut self`.
        unsafe { read_mapped(XIP_BASE + OFFSET, CAPACITY, offset, bytes) }
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
        // One sector per operation, so interrupts stay off for one sector
        // erase at a time (45 ms typical, 400 ms at most).
        for s in (OFFSET + at..OFFSET + to as usize).step_by(SECTOR) {
            self.run(s, core::ptr::null(), SECTOR);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let at = check(offset, bytes.len(), WORD, CAPACITY)?;
        let mut done = 0;
        while done < bytes.len() {
            let a = OFFSET + at + done;
            let page_start = a - a % PAGE;
            let in_page = a - page_start;
            let n = (PAGE - in_page).min(bytes.len() - done);
            let mut page = [0xFFu8; PAGE];
            page[in_page..in_page + n].copy_from_slice(&bytes[done..done + n]);
            self.run(page_start, page.as_ptr(), PAGE);
            done += n;
        }
        Ok(())
    }
}
