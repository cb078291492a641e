//! F-GR fine-tuning on the nRF52840-DK (Cortex-M4F, 64 MHz), defmt over
//! RTT, run through probe-rs; each step's cycle count comes from the DWT.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use fdgr_firmware::probe::{finish, DwtBoard};
use panic_probe as _;

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        defmt::panic!("core peripherals already taken")
    };
    let mut board = DwtBoard::new("nRF52840-DK (64 MHz)", &mut cp.DCB, &mut cp.DWT);
    finish(fdgr_firmware::run(&mut board))
}
