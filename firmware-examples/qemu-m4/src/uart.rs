//! The sample link's transport under QEMU: UART0 of the mps2-an386, an
//! Arm CMSDK APB UART at 0x4000_4000, which QEMU connects to its first
//! `-serial` (the host passes a Unix socket). QEMU delivers a byte only
//! when the receive register is free, so the host's writes wait in the
//! socket instead of being dropped: no flow control is needed here.

use core::ptr::{read_volatile, write_volatile};

const BASE: usize = 0x4000_4000;
const DATA: *mut u32 = BASE as *mut u32;
const STATE: *mut u32 = (BASE + 0x04) as *mut u32;
const CTRL: *mut u32 = (BASE + 0x08) as *mut u32;
const BAUDDIV: *mut u32 = (BASE + 0x10) as *mut u32;
const TX_FULL: u32 = 1;
const RX_FULL: u32 = 2;

/// UART0, enabled for transmit and receive.
pub struct Uart(());

impl Uart {
    /// Enables UART0 (the smallest baud divider QEMU accepts: it does not
    /// throttle).
    pub fn new() -> Uart {
        // SAFETY: UART0's registers, used by nothing else in this program.
        unsafe {
            write_volatile(BAUDDIV, 16);
            write_volatile(CTRL, 0b11);
        }
        Uart(())
    }
}

impl fdgr_firmware::live::Link for Uart {
    fn read_byte(&mut self) -> u8 {
        // SAFETY: as in `new`.
        unsafe {
            while read_volatile(STATE) & RX_FULL == 0 {}
            read_volatile(DATA) as u8
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: as in `new`.
            unsafe {
                while read_volatile(STATE) & TX_FULL != 0 {}
                write_volatile(DATA, b as u32);
            }
        }
    }
}
