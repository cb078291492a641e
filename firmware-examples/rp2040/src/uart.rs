//! The sample link's transport on the Raspberry Pi Pico: UART0 on GP0 (TX,
//! pin 1) and GP1 (RX, pin 2). The Pico's USB port is the RP2040's own USB
//! controller (this firmware does not use it) and the Pico has no debug
//! probe on board, so the host reaches UART0 through an external 3.3 V
//! USB-UART adapter or a debug probe's UART (the Raspberry Pi Debug Probe's
//! "U" port, or a second Pico running the debugprobe firmware: its GP4/GP5
//! to this Pico's GP1/GP0). 115200 baud, 8 data bits, no parity, one stop
//! bit, no flow control.
//!
//! The UART needs a stable clock and, as a PL011, a bus clock (clk_sys) of
//! at least 3/5 of its own, so [`crystal_clocks`] moves clk_ref and with it
//! clk_sys from the ring oscillator (about 6 MHz, ±50 % between parts) to
//! the Pico's 12 MHz crystal and clocks clk_peri from clk_sys.
//!
//! Polling, no interrupts, the 32-byte receive FIFO on: bytes that arrive
//! while the FIFO is full (the host keeps sending during a learning step or
//! a flash erase) are lost; the frame they belonged to then fails its CRC
//! and the host sends it again.

use rp2040_pac::{CLOCKS, IO_BANK0, PADS_BANK0, RESETS, UART0, XOSC};

/// The Pico's crystal.
pub const XOSC_HZ: u32 = 12_000_000;
/// The link's baud rate.
pub const BAUD: u32 = 115_200;
/// The baud divisor in 1/128ths (as the Pico SDK computes it), its integer
/// part and its fraction in 1/64ths: 6 + 33/64, so 115,108 baud (−0.08 %).
const DIV: u32 = 8 * XOSC_HZ / BAUD;
const IBRD: u16 = (DIV >> 7) as u16;
const FBRD: u8 = (DIV & 0x7F).div_ceil(2) as u8;
/// XOSC start-up wait in units of 256 crystal cycles: about 4 ms, four
/// times the Pico SDK's default.
const XOSC_STARTUP: u16 = (4 * XOSC_HZ / 1000).div_ceil(256) as u16;

/// Runs clk_ref, clk_sys and clk_peri from the 12 MHz crystal.
pub fn crystal_clocks(xosc: &XOSC, clocks: &CLOCKS) {
    // SAFETY: DELAY takes a count of 256-cycle units (14 bits): 188.
    xosc.startup()
        .write(|w| unsafe { w.delay().bits(XOSC_STARTUP) });
    xosc.ctrl()
        .write(|w| w.freq_range()._1_15mhz().enable().enable());
    while xosc.status().read().stable().bit_is_clear() {}
    // clk_ref from XOSC (glitchless mux: wait until it has switched), and
    // clk_sys from clk_ref, as at reset.
    clocks.clk_ref_ctrl().modify(|_, w| w.src().xosc_clksrc());
    while clocks.clk_ref_selected().read().bits() != 1 << 2 {}
    clocks.clk_sys_ctrl().modify(|_, w| w.src().clk_ref());
    while clocks.clk_sys_selected().read().bits() != 1 {}
    // clk_peri: stop it, give it clk_sys, start it.
    clocks.clk_peri_ctrl().modify(|_, w| w.enable().clear_bit());
    cortex_m::asm::delay(16);
    clocks
        .clk_peri_ctrl()
        .write(|w| w.auxsrc().clk_sys().enable().set_bit());
}

/// UART0, enabled for transmit and receive.
pub struct Uart0 {
    uart: UART0,
}

impl Uart0 {
    /// Takes UART0 and the pins GP0 and GP1 out of reset and gives the pins
    /// to UART0 (GP1 with a pull-up, so an unconnected line reads idle).
    /// The clocks must run from the crystal ([`crystal_clocks`]).
    pub fn new(resets: &RESETS, io: &IO_BANK0, pads: &PADS_BANK0, uart: UART0) -> Uart0 {
        resets.reset().modify(|_, w| {
            w.io_bank0()
                .clear_bit()
                .pads_bank0()
                .clear_bit()
                .uart0()
                .clear_bit()
        });
        loop {
            let d = resets.reset_done().read();
            if d.io_bank0().bit_is_set() && d.pads_bank0().bit_is_set() && d.uart0().bit_is_set() {
                break;
            }
        }
        pads.gpio(0)
            .modify(|_, w| w.od().clear_bit().ie().clear_bit());
        pads.gpio(1).modify(|_, w| {
            w.od()
                .clear_bit()
                .ie()
                .set_bit()
                .pue()
                .set_bit()
                .pde()
                .clear_bit()
        });
        io.gpio(0).gpio_ctrl().write(|w| w.funcsel().uart());
        io.gpio(1).gpio_ctrl().write(|w| w.funcsel().uart());
        uart.uartcr().write(|w| w.uarten().clear_bit());
        // SAFETY: the integer divisor (16 bits) and fraction (6 bits) of
        // the baud rate: 6 and 33.
        uart.uartibrd()
            .write(|w| unsafe { w.baud_divint().bits(IBRD) });
        // SAFETY: as above.
        uart.uartfbrd()
            .write(|w| unsafe { w.baud_divfrac().bits(FBRD) });
        // Writing LCR_H latches the divisors. SAFETY: WLEN 3 is 8 bits.
        uart.uartlcr_h()
            .write(|w| unsafe { w.wlen().bits(3) }.fen().set_bit());
        uart.uartrsr().write(|w| {
            w.fe()
                .clear_bit_by_one()
                .pe()
                .clear_bit_by_one()
                .be()
                .clear_bit_by_one()
                .oe()
                .clear_bit_by_one()
        });
        uart.uartcr()
            .write(|w| w.uarten().set_bit().txe().set_bit().rxe().set_bit());
        Uart0 { uart }
    }
}

impl fdgr_firmware::live::Link for Uart0 {
    fn read_byte(&mut self) -> u8 {
        while self.uart.uartfr().read().rxfe().bit_is_set() {}
        // A framing, parity, break or overrun flag comes with the byte: it
        // is passed on and the frame's CRC rejects it.
        self.uart.uartdr().read().data().bits()
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while self.uart.uartfr().read().txff().bit_is_set() {}
            // SAFETY: DATA takes any byte.
            self.uart.uartdr().write(|w| unsafe { w.data().bits(b) });
        }
    }
}
