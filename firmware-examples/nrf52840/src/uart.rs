//! The sample link's transport on the nRF52840-DK: UARTE0 on P0.06 (TX)
//! and P0.08 (RX), which the DK wires to the J-Link OB's virtual COM port:
//! the host sees it as the J-Link's serial port on the same USB cable
//! (J2) that flashes the board. 115200 baud, 8 data bits, no parity, one
//! stop bit, no flow control (the DK also wires RTS P0.05 and CTS P0.07;
//! they are not used). The UART's clock comes from the 32 MHz crystal
//! (HFXO), started here.
//!
//! Polling, no interrupts: each byte is received by its own one-byte
//! EasyDMA transfer; between transfers the receiver keeps running and
//! holds the next few bytes in its RX FIFO. A byte that arrives while that
//! FIFO is full (during a learning step or a flash erase, when the host
//! keeps sending) is lost; the frame it belonged to then fails its CRC and
//! the host sends it again.

use core::sync::atomic::{compiler_fence, Ordering};

use nrf52840_pac::{CLOCK, P0, UARTE0};

/// P0.06: TXD, to the J-Link's RX.
const TX_PIN: usize = 6;
/// P0.08: RXD, from the J-Link's TX.
const RX_PIN: usize = 8;
/// Bytes sent per EasyDMA transfer (EasyDMA reads RAM only, so every
/// reply is copied through a buffer on the stack).
const TX_CHUNK: usize = 64;

/// UARTE0, enabled.
pub struct Uarte0 {
    uarte: UARTE0,
}

impl Uarte0 {
    /// Starts the crystal oscillator and gives P0.06 and P0.08 to UARTE0
    /// at 115200 baud (the receiver starts with the first read).
    pub fn new(clock: &CLOCK, p0: &P0, uarte: UARTE0) -> Uarte0 {
        clock
            .events_hfclkstarted
            .write(|w| w.events_hfclkstarted().clear_bit());
        clock
            .tasks_hfclkstart
            .write(|w| w.tasks_hfclkstart().set_bit());
        while clock
            .events_hfclkstarted
            .read()
            .events_hfclkstarted()
            .bit_is_clear()
        {}
        // The TX pin idles high, as an output; RX an input with a pull-up,
        // so an unconnected line reads idle.
        p0.outset.write(|w| w.pin6().set());
        p0.pin_cnf[TX_PIN].write(|w| w.dir().output().input().disconnect());
        p0.pin_cnf[RX_PIN].write(|w| w.dir().input().input().connect().pull().pullup());
        uarte.enable.write(|w| w.enable().disabled());
        uarte.psel.txd.write(|w| {
            w.port().clear_bit().connect().connected();
            // SAFETY: PIN takes a pin number of the port (0 to 31): 6 is
            // P0.06.
            unsafe { w.pin().bits(TX_PIN as u8) }
        });
        uarte.psel.rxd.write(|w| {
            w.port().clear_bit().connect().connected();
            // SAFETY: as above: 8 is P0.08.
            unsafe { w.pin().bits(RX_PIN as u8) }
        });
        uarte.psel.rts.write(|w| w.connect().disconnected());
        uarte.psel.cts.write(|w| w.connect().disconnected());
        uarte.baudrate.write(|w| w.baudrate().baud115200());
        uarte
            .config
            .write(|w| w.hwfc().disabled().parity().excluded().stop().one());
        uarte.shorts.reset();
        uarte.enable.write(|w| w.enable().enabled());
        Uarte0 { uarte }
    }
}

impl fdgr_firmware::live::Link for Uarte0 {
    fn read_byte(&mut self) -> u8 {
        let mut byte = 0u8;
        let u = &self.uarte;
        u.events_endrx.write(|w| w.events_endrx().clear_bit());
        // SAFETY: EasyDMA writes one byte at `byte`, in RAM (the stack);
        // `byte` is not read or moved before ENDRX says the transfer ended.
        u.rxd
            .ptr
            .write(|w| unsafe { w.ptr().bits(&raw mut byte as u32) });
        // SAFETY: MAXCNT takes a byte count (16 bits).
        u.rxd.maxcnt.write(|w| unsafe { w.maxcnt().bits(1) });
        compiler_fence(Ordering::SeqCst);
        u.tasks_startrx.write(|w| w.tasks_startrx().set_bit());
        while u.events_endrx.read().events_endrx().bit_is_clear() {}
        compiler_fence(Ordering::SeqCst);
        // Overrun, parity, framing or break: the byte is passed on and the
        // frame's CRC rejects it; clear the flags for the next one.
        if u.events_error.read().events_error().bit_is_set() {
            u.events_error.write(|w| w.events_error().clear_bit());
            let e = u.errorsrc.read().bits();
            // SAFETY: writing ones to ERRORSRC clears those flags.
            u.errorsrc.write(|w| unsafe { w.bits(e) });
        }
        // SAFETY: `byte` is a live local; the transfer that wrote it has
        // ended. Read volatile: the write came from EasyDMA, not the code.
        unsafe { core::ptr::read_volatile(&raw const byte) }
    }

    fn write(&mut self, bytes: &[u8]) {
        let u = &self.uarte;
        let mut buf = [0u8; TX_CHUNK];
        for chunk in bytes.chunks(TX_CHUNK) {
            buf[..chunk.len()].copy_from_slice(chunk);
            u.events_endtx.write(|w| w.events_endtx().clear_bit());
            // SAFETY: EasyDMA reads `chunk.len()` bytes from `buf`, in RAM
            // (the stack), which is not changed before ENDTX says the
            // transfer ended.
            u.txd
                .ptr
                .write(|w| unsafe { w.ptr().bits(buf.as_ptr() as u32) });
            // SAFETY: MAXCNT takes a byte count (16 bits): at most 64.
            u.txd
                .maxcnt
                .write(|w| unsafe { w.maxcnt().bits(chunk.len() as u16) });
            compiler_fence(Ordering::SeqCst);
            u.tasks_starttx.write(|w| w.tasks_starttx().set_bit());
            while u.events_endtx.read().events_endtx().bit_is_clear() {}
            compiler_fence(Ordering::SeqCst);
        }
    }
}
