//! What every board's flash driver for the live image shares: the error
//! type of its `NorFlash` and the bounds and alignment check of an access
//! to the reserved region.

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};

/// Why a board's flash refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError {
    /// Outside the reserved region.
    Bounds,
    /// Offset or length not a multiple of the write or erase size.
    Align,
    /// The controller stayed locked after its key sequence.
    Locked,
    /// The controller's error flags after an operation.
    Status(u32),
    /// The host refused a call (QEMU's flash file through semihosting).
    Host,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::Bounds => NorFlashErrorKind::OutOfBounds,
            FlashError::Align => NorFlashErrorKind::NotAligned,
            FlashError::Locked | FlashError::Status(_) | FlashError::Host => {
                NorFlashErrorKind::Other
            }
        }
    }
}

/// `len` bytes at `offset` of a region of `capacity` bytes: inside it, and
/// offset and length multiples of `align`; the offset as an index.
pub fn check(offset: u32, len: usize, align: usize, capacity: usize) -> Result<usize, FlashError> {
    let at = offset as usize;
    if at.checked_add(len).is_none_or(|end| end > capacity) {
        return Err(FlashError::Bounds);
    }
    if at % align != 0 || len % align != 0 {
        return Err(FlashError::Align);
    }
    Ok(at)
}

/// The erase range `from..to` of a region of `capacity` bytes: inside it,
/// in whole erase units of `unit` bytes; the start as an index.
pub fn check_erase(from: u32, to: u32, unit: usize, capacity: usize) -> Result<usize, FlashError> {
    if from > to {
        return Err(FlashError::Bounds);
    }
    check(from, (to - from) as usize, unit, capacity)
}

/// Reads `bytes.len()` bytes at `offset` of memory-mapped flash whose
/// reserved region of `capacity` bytes starts at address `base`, checking
/// the bounds first.
///
/// # Safety
///
/// `[base, base + capacity)` must be readable memory (mapped flash) that
/// only changes through the caller's `&mut` driver.
pub unsafe fn read_mapped(
    base: usize,
    capacity: usize,
    offset: u32,
    bytes: &mut [u8],
) -> Result<(), FlashError> {
    let at = check(offset, bytes.len(), 1, capacity)?;
    // SAFETY: [base + at, base + at + len) lies inside the region (checked
    // above), which the caller guarantees readable and unchanged meanwhile.
    let src = unsafe { core::slice::from_raw_parts((base + at) as *const u8, bytes.len()) };
    bytes.copy_from_slice(src);
    Ok(())
}
