//! F-GR fine-tuning on an STM32F4 (NUCLEO-F411RE, Cortex-M4F), defmt over
//! RTT, run through probe-rs. The core runs from the reset clock (HSI,
//! 16 MHz); each step's cycle count comes from the DWT.
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
    let mut board = DwtBoard::new(
        "STM32F411 (NUCLEO-F411RE, HSI 16 MHz)",
        &mut cp.DCB,
        &mut cp.DWT,
    );
    finish(fdgr_firmware::run(&mut board))
}
