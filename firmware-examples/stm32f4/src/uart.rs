//! The sample link's transport on the NUCLEO-F411RE: USART2 on PA2 (TX)
//! and PA3 (RX), alternate function 7, which the board wires to the
//! ST-LINK's virtual COM port (solder bridges SB13 and SB14, closed as
//! shipped): the host sees it as the ST-LINK's serial port on the same USB
//! cable that flashes the board. 115200 baud, 8 data bits, no parity, one
//! stop bit, no flow control, from the reset clock (HSI, 16 MHz; APB1
//! undivided).
//!
//! Polling, no interrupts: USART2 holds one received byte, so a byte that
//! arrives while the previous one has not been read (during a learning step
//! or a flash erase) is lost; the frame it belonged to then fails its CRC
//! and the host sends it again.

use stm32f4::stm32f411::{GPIOA, RCC, USART2};

/// The peripheral clock of USART2 at reset: HSI (16 MHz), AHB and APB1
/// undivided.
const PCLK1: u32 = 16_000_000;
/// The link's baud rate.
pub const BAUD: u32 = 115_200;
/// USARTDIV with 16× oversampling, in sixteenths: 139 (8 + 11/16), so
/// 115,108 baud (−0.08 %).
const BRR: u32 = (PCLK1 + BAUD / 2) / BAUD;

/// USART2, enabled for transmit and receive.
pub struct Usart2 {
    usart: USART2,
}

impl Usart2 {
    /// Clocks GPIOA and USART2, gives PA2 and PA3 to USART2 (AF7, PA3 with
    /// a pull-up so an unconnected line reads idle), and enables it.
    pub fn new(rcc: &RCC, gpioa: GPIOA, usart: USART2) -> Usart2 {
        rcc.ahb1enr().modify(|_, w| w.gpioaen().enabled());
        rcc.apb1enr().modify(|_, w| w.usart2en().enabled());
        // Two APB cycles before USART2's registers may be written (the
        // read-back of the enable register waits for the write).
        let _ = rcc.apb1enr().read();
        gpioa.afrl().modify(|_, w| w.afrl2().af7().afrl3().af7());
        gpioa.pupdr().modify(|_, w| w.pupdr3().pull_up());
        gpioa
            .moder()
            .modify(|_, w| w.moder2().alternate().moder3().alternate());
        usart.cr1().write(|w| w.ue().disabled());
        usart.brr().write(|w| {
            w.div_mantissa()
                .set((BRR >> 4) as u16)
                .div_fraction()
                .set((BRR & 0xF) as u8)
        });
        usart
            .cr1()
            .write(|w| w.ue().enabled().te().enabled().re().enabled());
        Usart2 { usart }
    }
}

impl fdgr_firmware::live::Link for Usart2 {
    fn read_byte(&mut self) -> u8 {
        loop {
            let sr = self.usart.sr().read();
            // Reading SR then DR also clears an overrun, noise or framing
            // error: the byte is passed on and the frame's CRC rejects it.
            if sr.rxne().bit_is_set() || sr.ore().bit_is_set() {
                return self.usart.dr().read().dr().bits() as u8;
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while self.usart.sr().read().txe().bit_is_clear() {}
            self.usart.dr().write(|w| w.dr().set(u16::from(b)));
        }
        while self.usart.sr().read().tc().bit_is_clear() {}
    }
}
