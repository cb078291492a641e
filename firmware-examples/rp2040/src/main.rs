//! F-GR fine-tuning on a Raspberry Pi Pico (RP2040, Cortex-M0+, soft
//! float), defmt over RTT, run through probe-rs. The core runs from the
//! reset clock (ring oscillator, about 6 MHz); each step's cycle count
//! comes from SysTick.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use fdgr_firmware::probe::{finish, SysTickBoard};
use panic_probe as _;

/// The second-stage bootloader for the Pico's W25Q080-compatible flash.
#[link_section = ".boot2"]
#[used]
pub static BOOT2_FIRMWARE: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        defmt::panic!("core peripherals already taken")
    };
    let mut board = SysTickBoard::new("Raspberry Pi Pico (RP2040, ROSC)", &mut cp.SYST);
    finish(fdgr_firmware::run(&mut board))
}
