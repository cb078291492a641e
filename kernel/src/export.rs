//! The weight file `fdgr export` writes for firmware, and its no_std reader.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FDGR` |
//! | 2 | format version (1) |
//! | 1 | layers L (1..=4) |
//! | 1 | hidden activation (0 identity, 1 relu, 2 tanh, 3 sigmoid) |
//! | 1 | loss (0 softmax-ce, 1 mse) |
//! | 3 | reserved, zero |
//! | 4·(L+1) | widths n₀ … n_L as u32 |
//! | 4·P | θ as f32, in the kernel's parameter order |
//! | 4 | FNV-1a 32-bit checksum of all bytes before it |

use crate::act::Act;
use crate::error::Error;
use crate::loss::Loss;
use crate::shape::{Shape, MAX_LAYERS};

/// File magic.
pub const MAGIC: [u8; 4] = *b"FDGR";
/// Format version written and read.
pub const VERSION: u16 = 1;
const HEADER: usize = 12;

/// Why a weight file was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExportError {
    /// Fewer bytes than the header and sizes require.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The file does not start with `FDGR`.
    BadMagic,
    /// A version this reader does not know.
    BadVersion(u16),
    /// Invalid layer count, width, activation or loss code.
    BadShape,
    /// The checksum does not match the contents.
    BadChecksum,
    /// Bytes after the checksum.
    TrailingBytes,
    /// The file's shape differs from the one the caller expects.
    ShapeMismatch,
    /// A weight is NaN or infinite.
    NonFinite,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl core::fmt::Display for ExportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExportError::Truncated { needed, got } => {
                write!(f, "truncated: needs {needed} bytes, has {got}")
            }
            ExportError::BadMagic => write!(f, "not an fdgr weight file (magic FDGR expected)"),
            ExportError::BadVersion(v) => {
                write!(f, "unknown format version {v} (expected {VERSION})")
            }
            ExportError::BadShape => write!(f, "invalid model shape in header"),
            ExportError::BadChecksum => write!(f, "checksum mismatch (file corrupt)"),
            ExportError::TrailingBytes => write!(f, "unexpected bytes after the checksum"),
            ExportError::ShapeMismatch => write!(f, "model shape differs from the one expected"),
            ExportError::NonFinite => write!(f, "a weight is NaN or infinite"),
            ExportError::BufferTooSmall => write!(f, "output buffer too small"),
        }
    }
}

impl From<Error> for ExportError {
    fn from(_: Error) -> Self {
        ExportError::BadShape
    }
}

/// FNV-1a, 32 bits.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn act_code(a: Act) -> u8 {
    match a {
        Act::Identity => 0,
        Act::Relu => 1,
        Act::Tanh => 2,
        Act::Sigmoid => 3,
    }
}

fn act_from(c: u8) -> Option<Act> {
    Some(match c {
        0 => Act::Identity,
        1 => Act::Relu,
        2 => Act::Tanh,
        3 => Act::Sigmoid,
        _ => return None,
    })
}

/// Size in bytes of the file for `shape`.
pub const fn file_len(shape: &Shape) -> usize {
    HEADER + 4 * (shape.layers() + 1) + 4 * shape.param_count() + 4
}

/// Writes `shape` and `theta` into `out`; returns the bytes written.
pub fn encode(shape: &Shape, theta: &[f32], out: &mut [u8]) -> Result<usize, ExportError> {
    if theta.len() != shape.param_count() {
        return Err(ExportError::ShapeMismatch);
    }
    if theta.iter().any(|t| !t.is_finite()) {
        return Err(ExportError::NonFinite);
    }
    let n = file_len(shape);
    if out.len() < n {
        return Err(ExportError::BufferTooSmall);
    }
    let out = &mut out[..n];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    out[6] = shape.layers() as u8;
    out[7] = act_code(shape.act);
    out[8] = match shape.loss {
        Loss::SoftmaxCe => 0,
        Loss::Mse => 1,
    };
    out[9..12].fill(0);
    let mut o = HEADER;
    for &d in shape.dims() {
        out[o..o + 4].copy_from_slice(&(d as u32).to_le_bytes());
        o += 4;
    }
    for t in theta {
        out[o..o + 4].copy_from_slice(&t.to_le_bytes());
        o += 4;
    }
    let h = fnv1a(&out[..o]);
    out[o..o + 4].copy_from_slice(&h.to_le_bytes());
    Ok(n)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Reads the header of a weight file and checks sizes and checksum;
/// returns the shape.
pub fn decode_shape(bytes: &[u8]) -> Result<Shape, ExportError> {
    if bytes.len() < HEADER {
        return Err(ExportError::Truncated {
            needed: HEADER,
            got: bytes.len(),
        });
    }
    if bytes[..4] != MAGIC {
        return Err(ExportError::BadMagic);
    }
    let v = u16::from_le_bytes([bytes[4], bytes[5]]);
    if v != VERSION {
        return Err(ExportError::BadVersion(v));
    }
    let layers = bytes[6] as usize;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(ExportError::BadShape);
    }
    let act = act_from(bytes[7]).ok_or(ExportError::BadShape)?;
    let loss = match bytes[8] {
        0 => Loss::SoftmaxCe,
        1 => Loss::Mse,
        _ => return Err(ExportError::BadShape),
    };
    let dims_end = HEADER + 4 * (layers + 1);
    if bytes.len() < dims_end {
        return Err(ExportError::Truncated {
            needed: dims_end,
            got: bytes.len(),
        });
    }
    let mut dims = [0usize; MAX_LAYERS + 1];
    for (i, d) in dims.iter_mut().take(layers + 1).enumerate() {
        let w = u32_at(bytes, HEADER + 4 * i);
        if w == 0 || w > (1 << 24) {
            return Err(ExportError::BadShape);
        }
        *d = w as usize;
    }
    let shape = Shape::try_new(&dims[..=layers], act, loss)?;
    let n = file_len(&shape);
    if bytes.len() < n {
        return Err(ExportError::Truncated {
            needed: n,
            got: bytes.len(),
        });
    }
    if bytes.len() > n {
        return Err(ExportError::TrailingBytes);
    }
    if fnv1a(&bytes[..n - 4]) != u32_at(bytes, n - 4) {
        return Err(ExportError::BadChecksum);
    }
    Ok(shape)
}

/// Reads a weight file into `theta` (exactly P entries), checking that its
/// shape is `expect` when given. Rejects non-finite weights.
pub fn decode(
    bytes: &[u8],
    expect: Option<&Shape>,
    theta: &mut [f32],
) -> Result<Shape, ExportError> {
    let shape = decode_shape(bytes)?;
    if let Some(e) = expect {
        if *e != shape {
            return Err(ExportError::ShapeMismatch);
        }
    }
    if theta.len() != shape.param_count() {
        return Err(ExportError::BufferTooSmall);
    }
    let start = HEADER + 4 * (shape.layers() + 1);
    for (i, t) in theta.iter_mut().enumerate() {
        let v = f32::from_bits(u32_at(bytes, start + 4 * i));
        if !v.is_finite() {
            return Err(ExportError::NonFinite);
        }
        *t = v;
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Shape = Shape::new(&[3, 4, 2], Act::Tanh, Loss::SoftmaxCe);

    #[test]
    fn round_trip_and_corruption() {
        let theta: [f32; S.param_count()] = core::array::from_fn(|i| i as f32 * 0.25 - 1.0);
        let mut buf = [0u8; file_len(&S)];
        assert_eq!(encode(&S, &theta, &mut buf), Ok(buf.len()));
        let mut back = [0.0f32; S.param_count()];
        assert_eq!(decode(&buf, Some(&S), &mut back), Ok(S));
        assert_eq!(back, theta);
        // every truncation is an error
        for n in 0..buf.len() {
            assert!(decode(&buf[..n], None, &mut back).is_err());
        }
        // every single-byte corruption is detected
        for i in 0..buf.len() {
            let mut c = buf;
            c[i] ^= 0x10;
            assert!(decode(&c, Some(&S), &mut back).is_err(), "byte {i}");
        }
        let other = Shape::new(&[3, 5, 2], Act::Tanh, Loss::SoftmaxCe);
        assert_eq!(
            decode(&buf, Some(&other), &mut back),
            Err(ExportError::ShapeMismatch)
        );
        let mut nan = theta;
        nan[2] = f32::NAN;
        assert_eq!(encode(&S, &nan, &mut buf), Err(ExportError::NonFinite));
    }
}
