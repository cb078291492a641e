//! Stack painting: fill the unused stack with a pattern at start, find the
//! lowest word that was overwritten at the end. The peak is measured from
//! the top of the stack (`_stack_start`, the initial SP), so it includes
//! everything the reset handler and `main` put there.

/// The paint.
pub const PATTERN: u32 = 0xFD6B_5A1E;
/// At most this many bytes below the caller's frame are painted (QEMU's
/// RAM is 4 MiB; painting it all would only cost time).
pub const MAX_WINDOW: usize = 64 * 1024;
/// Bytes left unpainted right below the painter's stack pointer.
const MARGIN: usize = 64;

extern "C" {
    // cortex-m-rt's linker script: the initial SP, and the end of the
    // statics (the lowest address the stack may grow to).
    static _stack_start: u32;
    static _stack_end: u32;
}

/// The painted window `[lo, hi)`, and the top of the stack.
#[derive(Clone, Copy, Debug)]
pub struct Painted {
    lo: usize,
    hi: usize,
    top: usize,
}

impl Painted {
    /// Bytes painted.
    pub fn window(&self) -> usize {
        self.hi - self.lo
    }

    /// The initial stack pointer.
    pub fn top(&self) -> usize {
        self.top
    }
}

/// Paints the free stack below the caller (at most [`MAX_WINDOW`] bytes,
/// never below the statics).
#[inline(never)]
pub fn paint() -> Painted {
    let sp = cortex_m::register::msp::read() as usize;
    // Only the addresses of the linker symbols are taken.
    let end = core::ptr::addr_of!(_stack_end) as usize;
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let hi = (sp - MARGIN) & !3;
    let lo = ((hi.saturating_sub(MAX_WINDOW)).max(end) + 3) & !3;
    let mut a = lo;
    while a < hi {
        // SAFETY: [lo, hi) lies between the end of the statics and the
        // current stack pointer: RAM that nothing uses yet.
        unsafe { core::ptr::write_volatile(a as *mut u32, PATTERN) };
        a += 4;
    }
    Painted { lo, hi, top }
}

/// The deepest the stack has been since [`paint`], in bytes from its top;
/// `None` if it reached the bottom of the window (the peak is then unknown).
#[inline(never)]
pub fn peak(p: &Painted) -> Option<usize> {
    let mut a = p.lo;
    // SAFETY: reads of the painted window, which is RAM.
    while a < p.hi && unsafe { core::ptr::read_volatile(a as *const u32) } == PATTERN {
        a += 4;
    }
    if a == p.lo {
        None
    } else {
        Some(p.top - a)
    }
}
