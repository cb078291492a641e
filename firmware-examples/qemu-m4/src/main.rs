//! F-GR fine-tuning on a Cortex-M4F under QEMU (`mps2-an386`).
//!
//! defmt logs go to the host through semihosting (stdout); the process
//! exits with 0 when fine-tuning finished, 1 on any failure, panic or
//! fault (never hangs). `cargo xtask firmware` runs it and checks every
//! logged loss and the final weights bit for bit against the host.
//!
//! `FDGR_FAULT=panic` or `FDGR_FAULT=hardfault` at build time makes it fail
//! on purpose, so the xtask can check that failures exit with 1.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::hio;
use defmt_semihosting as _;
use fdgr_firmware::Board;

#[cfg(feature = "live")]
mod flash;
#[cfg(feature = "live")]
mod uart;

struct Qemu;

impl Board for Qemu {
    fn name(&self) -> &'static str {
        "qemu mps2-an386 (Cortex-M4F)"
    }
}

#[entry]
fn main() -> ! {
    match option_env!("FDGR_FAULT") {
        Some("panic") => panic!("deliberate panic (FDGR_FAULT=panic)"),
        Some("hardfault") => cortex_m::asm::udf(),
        _ => {}
    }
    #[cfg(feature = "live")]
    {
        let mut link = uart::Uart::new();
        let ok = match flash::HostFlash::open() {
            Ok(mut f) => fdgr_firmware::live::run_live(&mut Qemu, &mut link, &mut f).is_ok(),
            Err(e) => {
                defmt::error!("flash file: {}", defmt::Debug2Format(&e));
                false
            }
        };
        fdgr_firmware::exit(ok)
    }
    #[cfg(not(feature = "live"))]
    {
        let ok = fdgr_firmware::run(&mut Qemu).is_ok();
        fdgr_firmware::exit(ok)
    }
}

static FAILING: AtomicBool = AtomicBool::new(false);

/// Writes a failure message as text on the host's stderr (never through
/// defmt, whose logger may be what failed), then exits with 1.
fn fail(args: core::fmt::Arguments) -> ! {
    // Load and store (no swap): the same source builds for thumbv6m.
    if !FAILING.load(Ordering::Relaxed) {
        FAILING.store(true, Ordering::Relaxed);
        if let Ok(mut e) = hio::hstderr() {
            let _ = e.write_fmt(args);
            let _ = e.write_str("\n");
        }
    }
    fdgr_firmware::exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fail(format_args!("panic: {info}"))
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    fail(format_args!("HardFault at pc {:#010x}", ef.pc()))
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    fail(format_args!("unexpected exception or interrupt {irqn}"))
}
