//! CRC-32 (IEEE 802.3, reflected: zlib's `crc32`), the one definition the
//! sample link ([`crate::link`]) and the flash store ([`crate::store`])
//! check their frames and records with. A 16-entry table (64 bytes of
//! flash) halves the work of the bit-by-bit loop.

const TABLE: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// The CRC register after `data`, from `crc` (start with `!0`; the CRC is
/// the register inverted at the end), for checksums computed in pieces.
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        crc = (crc >> 4) ^ TABLE[(crc & 15) as usize];
        crc = (crc >> 4) ^ TABLE[(crc & 15) as usize];
    }
    crc
}

/// CRC-32 of `data` (`"123456789"` gives `0xCBF43926`).
pub fn crc32(data: &[u8]) -> u32 {
    !update(!0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
        let whole = super::crc32(b"hello, world");
        let parts = !super::update(super::update(!0, b"hello, "), b"world");
        assert_eq!(whole, parts);
    }
}
