//! Flash for QEMU's mps2-an386, which has none that a program can write:
//! a file on the host (`fdgr-flash.bin` in QEMU's working directory, or
//! `FDGR_FLASH` at build time) read and written through semihosting, with
//! the semantics of NOR flash, so that a power cut (the host kills QEMU)
//! does to it what it does to a board's flash:
//!
//! * erase sets a unit to 0xFF, in pieces of [`ERASE_PIECE`] bytes (a cut
//!   mid-erase leaves part of the unit erased);
//! * a write can only clear bits: the bytes written are the old ones AND
//!   the new ones;
//! * a write reaches the file in pieces of at most [`WRITE_SIZE`] bytes,
//!   each its own host `write`, so a cut tears a record between pieces.

use cortex_m_semihosting::{nr, syscall};
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use fdgr_firmware::flash::{check, check_erase, FlashError};

/// Program granularity (bytes).
pub const WRITE_SIZE: usize = 16;
/// Erase unit (bytes): 64 KiB, like the STM32F411's fifth sector.
pub const ERASE_SIZE: usize = 64 * 1024;
/// Size of the emulated flash: two erase units.
pub const CAPACITY: usize = 2 * ERASE_SIZE;
/// Bytes per host write while erasing.
pub const ERASE_PIECE: usize = 256;

/// The flash file, open for reading and writing.
pub struct HostFlash {
    handle: usize,
}

const PATH: &str = match option_env!("FDGR_FLASH") {
    Some(p) => p,
    None => "fdgr-flash.bin",
};

impl HostFlash {
    /// Opens the flash file, creating it erased (0xFF) when it does not
    /// exist or is shorter than [`CAPACITY`].
    pub fn open() -> Result<HostFlash, FlashError> {
        let mut path = [0u8; 256];
        let n = PATH.len().min(255);
        path[..n].copy_from_slice(&PATH.as_bytes()[..n]);
        // SAFETY: a semihosting call with a NUL-terminated path.
        let h = unsafe { syscall!(OPEN, path.as_ptr(), nr::open::RW_BINARY, n) } as isize;
        let (handle, fresh) = if h >= 0 {
            (h as usize, false)
        } else {
            // SAFETY: as above.
            let h = unsafe { syscall!(OPEN, path.as_ptr(), nr::open::RW_TRUNC_BINARY, n) } as isize;
            if h < 0 {
                return Err(FlashError::Host);
            }
            (h as usize, true)
        };
        let mut f = HostFlash { handle };
        // SAFETY: a semihosting call on our handle.
        let len = unsafe { syscall!(FLEN, f.handle) } as isize;
        if fresh || len < CAPACITY as isize {
            f.fill(0, CAPACITY, 0xFF)?;
        }
        Ok(f)
    }

    fn seek(&mut self, at: usize) -> Result<(), FlashError> {
        // SAFETY: a semihosting call on our handle.
        match unsafe { syscall!(SEEK, self.handle, at) } {
            0 => Ok(()),
            _ => Err(FlashError::Host),
        }
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), FlashError> {
        self.seek(at)?;
        // SAFETY: a semihosting call reading `bytes`.
        match unsafe { syscall!(WRITE, self.handle, bytes.as_ptr(), bytes.len()) } {
            0 => Ok(()),
            _ => Err(FlashError::Host),
        }
    }

    fn get(&mut self, at: usize, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.seek(at)?;
        // SAFETY: a semihosting call writing into `bytes`.
        match unsafe { syscall!(READ, self.handle, bytes.as_mut_ptr(), bytes.len()) } {
            0 => Ok(()),
            _ => Err(FlashError::Host),
        }
    }

    fn fill(&mut self, from: usize, to: usize, v: u8) -> Result<(), FlashError> {
        let piece = [v; ERASE_PIECE];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ERASE_PIECE);
            self.put(at, &piece[..n])?;
            at += n;
        }
        Ok(())
    }
}

impl ErrorType for HostFlash {
    type Error = FlashError;
}

impl ReadNorFlash for HostFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let at = check(offset, bytes.len(), 1, CAPACITY)?;
        self.get(at, bytes)
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for HostFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let at = check_erase(from, to, ERASE_SIZE, CAPACITY)?;
        self.fill(at, to as usize, 0xFF)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let at = check(offset, bytes.len(), WRITE_SIZE, CAPACITY)?;
        let mut old = [0u8; WRITE_SIZE];
        for (i, chunk) in bytes.chunks(WRITE_SIZE).enumerate() {
            let a = at + i * WRITE_SIZE;
            self.get(a, &mut old)?;
            for (o, n) in old.iter_mut().zip(chunk) {
                *o &= *n;
            }
            self.put(a, &old)?;
        }
        Ok(())
    }
}
