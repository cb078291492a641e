//! F-GR fine-tuning on the nRF52840-DK (Cortex-M4F, 64 MHz), defmt over
//! RTT, run through probe-rs; each step's cycle count comes from the DWT.
//!
//! With feature `live`: the live image (`fdgr_firmware::live`), samples
//! over UARTE0 (the J-Link's virtual COM port, [`uart`]), the learned
//! state in the last 128 KiB of flash ([`flash`]).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use fdgr_firmware::probe::{finish, DwtBoard};
use panic_probe as _;

#[cfg(feature = "live")]
mod flash;
#[cfg(feature = "live")]
mod uart;

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        defmt::panic!("core peripherals already taken")
    };
    let mut board = DwtBoard::new("nRF52840-DK (64 MHz)", &mut cp.DCB, &mut cp.DWT);
    #[cfg(feature = "live")]
    {
        let Some(dp) = nrf52840_pac::Peripherals::take() else {
            defmt::panic!("device peripherals already taken")
        };
        let mut link = uart::Uarte0::new(&dp.CLOCK, &dp.P0, dp.UARTE0);
        let mut flash = flash::Pages::new(dp.NVMC);
        finish(fdgr_firmware::live::run_live(
            &mut board, &mut link, &mut flash,
        ))
    }
    #[cfg(not(feature = "live"))]
    finish(fdgr_firmware::run(&mut board))
}
