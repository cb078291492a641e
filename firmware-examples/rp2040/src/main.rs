//! F-GR fine-tuning on a Raspberry Pi Pico (RP2040, Cortex-M0+, soft
//! float), defmt over RTT, run through probe-rs. The core runs from the
//! reset clock (ring oscillator, about 6 MHz); each step's cycle count
//! comes from SysTick.
//!
//! With feature `live`: the live image (`fdgr_firmware::live`), the core
//! on the 12 MHz crystal, samples over UART0 on GP0/GP1 ([`uart`]), the
//! learned state in the last 128 KiB of flash ([`flash`]).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use fdgr_firmware::probe::{finish, SysTickBoard};
use panic_probe as _;

#[cfg(feature = "live")]
mod flash;
#[cfg(feature = "live")]
mod uart;

/// The second-stage bootloader for the Pico's W25Q080-compatible flash.
#[link_section = ".boot2"]
#[used]
pub static BOOT2_FIRMWARE: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        defmt::panic!("core peripherals already taken")
    };
    #[cfg(feature = "live")]
    {
        let Some(dp) = rp2040_pac::Peripherals::take() else {
            defmt::panic!("device peripherals already taken")
        };
        uart::crystal_clocks(&dp.XOSC, &dp.CLOCKS);
        let mut board = SysTickBoard::new("Raspberry Pi Pico (RP2040, XOSC 12 MHz)", &mut cp.SYST);
        let mut link = uart::Uart0::new(&dp.RESETS, &dp.IO_BANK0, &dp.PADS_BANK0, dp.UART0);
        let mut flash = flash::Sectors::new();
        finish(fdgr_firmware::live::run_live(
            &mut board, &mut link, &mut flash,
        ))
    }
    #[cfg(not(feature = "live"))]
    {
        let mut board = SysTickBoard::new("Raspberry Pi Pico (RP2040, ROSC)", &mut cp.SYST);
        finish(fdgr_firmware::run(&mut board))
    }
}
