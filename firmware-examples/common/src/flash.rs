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
