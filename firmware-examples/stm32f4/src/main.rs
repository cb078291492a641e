//! F-GR fine-tuning on an STM32F4 (NUCLEO-F411RE, Cortex-M4F), defmt over
//! RTT, run through probe-rs. The core runs from the reset clock (HSI,
//! 16 MHz); each step's cycle count comes from the DWT.
//!
//! With feature `live`: the live image (`fdgr_firmware::live`), samples
//! over USART2 (the ST-LINK's virtual COM port, [`uart`]), the learned
//! state in flash sectors 6 and 7 ([`flash`]).
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
    let mut board = DwtBoard::new(
        "STM32F411 (NUCLEO-F411RE, HSI 16 MHz)",
        &mut cp.DCB,
        &mut cp.DWT,
    );
    #[cfg(feature = "live")]
    {
        let Some(dp) = stm32f4::stm32f411::Peripherals::take() else {
            defmt::panic!("device peripherals already taken")
        };
        let mut link = uart::Usart2::new(&dp.RCC, dp.GPIOA, dp.USART2);
        let mut flash = flash::Sectors::new(dp.FLASH);
        finish(fdgr_firmware::live::run_live(
            &mut board, &mut link, &mut flash,
        ))
    }
    #[cfg(not(feature = "live"))]
    finish(fdgr_firmware::run(&mut board))
}
