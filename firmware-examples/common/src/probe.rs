//! What the boards run through probe-rs share: cycle counters and the end
//! of the program (defmt goes over RTT; `panic-probe` reports failures).

use crate::{Board, Failure};

/// A board timed with the DWT cycle counter (ARMv7-M and later: the
/// Cortex-M4F boards).
#[cfg(feature = "dwt")]
pub struct DwtBoard {
    name: &'static str,
}

#[cfg(feature = "dwt")]
impl DwtBoard {
    /// Starts the DWT cycle counter.
    pub fn new(
        name: &'static str,
        dcb: &mut cortex_m::peripheral::DCB,
        dwt: &mut cortex_m::peripheral::DWT,
    ) -> Self {
        dcb.enable_trace();
        dwt.enable_cycle_counter();
        DwtBoard { name }
    }
}

#[cfg(feature = "dwt")]
impl Board for DwtBoard {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cycles(&mut self) -> Option<u32> {
        Some(cortex_m::peripheral::DWT::cycle_count())
    }
}

/// A board timed with SysTick on the core clock (any Cortex-M; 24 bits, so
/// one step must take fewer than 2²⁴ cycles).
pub struct SysTickBoard {
    name: &'static str,
}

impl SysTickBoard {
    /// Starts SysTick free-running on the core clock, without interrupts.
    pub fn new(name: &'static str, syst: &mut cortex_m::peripheral::SYST) -> Self {
        use cortex_m::peripheral::syst::SystClkSource;
        syst.disable_interrupt();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00FF_FFFF);
        syst.clear_current();
        syst.enable_counter();
        SysTickBoard { name }
    }
}

impl Board for SysTickBoard {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cycles(&mut self) -> Option<u32> {
        // SysTick counts down; turn it into an up-counter.
        Some(0x00FF_FFFF - cortex_m::peripheral::SYST::get_current())
    }
    fn cycle_mask(&self) -> u32 {
        0x00FF_FFFF
    }
}

/// Ends a probe-rs run: semihosting exit 0 on success (probe-rs exits 0),
/// a defmt panic on failure (`panic-probe` logs it and traps; probe-rs
/// exits non-zero).
pub fn finish(r: Result<(), Failure>) -> ! {
    match r {
        Ok(()) => crate::exit(true),
        Err(e) => defmt::panic!("fine-tuning failed: {}", e),
    }
}
