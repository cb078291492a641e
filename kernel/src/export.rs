//! The weight file `fdgr export` writes for firmware, and its no_std reader.
//!
//! Version 2 carries any layer-list model (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FDGR` |
//! | 2 | format version (2) |
//! | 2 | layers L (1..=1024) |
//! | 1 | loss (0 softmax-ce, 1 mse) |
//! | 3 | reserved, zero |
//! | 12 | input shape C, H, W as u32 |
//! | 20·L | the layers ([`encode_layer`]) |
//! | 4 | P, parameters, as u32 |
//! | 4 | S, state values (batch-norm running mean and variance), as u32 |
//! | 4·P | θ as f32, in the kernel's parameter order |
//! | 4·S | the state as f32 |
//! | 4 | FNV-1a 32-bit checksum of all bytes before it |
//!
//! Version 1 (MLPs only) still reads:
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
//!
//! [`decode_shape`] and [`decode`] read an MLP from either version (a
//! version-2 layer list `Linear, σ, …, Linear`); [`decode_header`],
//! [`decode_layers`] and [`decode_weights`] read any version-2 model.

use crate::error::Error;
use crate::loss::Loss;
use crate::model::{Dims, Layer, Op, OpFields, Src};
use crate::serial::act::Act;
use crate::shape::{Shape, MAX_LAYERS};

/// File magic.
pub const MAGIC: [u8; 4] = *b"FDGR";
/// The first format version (MLPs), still read and written by [`encode`].
pub const VERSION: u16 = 1;
/// The layer-list format version, written by [`encode_v2`].
pub const VERSION_2: u16 = 2;
const HEADER: usize = 12;
/// Bytes of the version-2 header (before the layer records).
const HEADER_2: usize = 24;
/// Bytes of one version-2 layer record.
pub const LAYER_BYTES: usize = 20;
/// Most layers a version-2 file may hold.
pub const MAX_FILE_LAYERS: usize = 1024;

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
    /// The file's model is not an MLP (a reader that needs one).
    NotMlp,
    /// A layer record is invalid, or the layer list does not plan.
    BadLayer,
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
                write!(
                    f,
                    "unknown format version {v} (expected {VERSION} or {VERSION_2})"
                )
            }
            ExportError::BadShape => write!(f, "invalid model shape in header"),
            ExportError::BadChecksum => write!(f, "checksum mismatch (file corrupt)"),
            ExportError::TrailingBytes => write!(f, "unexpected bytes after the checksum"),
            ExportError::ShapeMismatch => write!(f, "model shape differs from the one expected"),
            ExportError::NonFinite => write!(f, "a weight is NaN or infinite"),
            ExportError::BufferTooSmall => write!(f, "output buffer too small"),
            ExportError::NotMlp => {
                write!(f, "the model is not an MLP (Linear and activation layers)")
            }
            ExportError::BadLayer => write!(f, "invalid layer record or layer list"),
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

/// The format version of a weight file (after checking the magic).
pub fn version(bytes: &[u8]) -> Result<u16, ExportError> {
    if bytes.len() < 6 {
        return Err(ExportError::Truncated {
            needed: HEADER,
            got: bytes.len(),
        });
    }
    if bytes[..4] != MAGIC {
        return Err(ExportError::BadMagic);
    }
    match u16::from_le_bytes([bytes[4], bytes[5]]) {
        v @ (VERSION | VERSION_2) => Ok(v),
        v => Err(ExportError::BadVersion(v)),
    }
}

/// Reads the header of an MLP's weight file (either version) and checks
/// sizes and checksum; returns the shape.
pub fn decode_shape(bytes: &[u8]) -> Result<Shape, ExportError> {
    if version(bytes)? == VERSION_2 {
        return mlp_of_v2(bytes);
    }
    if bytes.len() < HEADER {
        return Err(ExportError::Truncated {
            needed: HEADER,
            got: bytes.len(),
        });
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
    if version(bytes)? == VERSION_2 {
        return decode_weights(bytes, theta, &mut []).map(|_| shape);
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

/// The header of a version-2 file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Layers.
    pub layers: usize,
    /// Input shape.
    pub input: Dims,
    /// Loss.
    pub loss: Loss,
    /// Parameters P.
    pub params: usize,
    /// State values S.
    pub state: usize,
}

/// Size in bytes of a version-2 file.
pub const fn file_len_v2(layers: usize, params: usize, state: usize) -> usize {
    HEADER_2 + LAYER_BYTES * layers + 8 + 4 * (params + state) + 4
}

/// The 20-byte record of one layer: op code (0 linear, 1 conv, 2 batch
/// norm, 3 activation, 4 max pool, 5 average pool, 6 global average pool,
/// 7 flatten, 8 add), flags (bit 0: bias), activation code, source kind
/// (0 previous, 1 input, 2 layer), source layer (u16), `Add`'s other layer
/// (u16), output features or channels (u32), kernel, stride, padding (u8
/// each), reserved, groups (u32).
pub fn encode_layer(l: &Layer, out: &mut [u8; LAYER_BYTES]) -> Result<(), ExportError> {
    out.fill(0);
    out[0] = l.op.code();
    let (kind, src) = match l.src {
        Src::Prev => (0u8, 0usize),
        Src::Input => (1, 0),
        Src::Node(i) => (2, i),
    };
    out[3] = kind;
    let narrow = |v: usize, max: usize| {
        if v <= max {
            Ok(v)
        } else {
            Err(ExportError::BadLayer)
        }
    };
    out[4..6].copy_from_slice(&(narrow(src, 0xFFFF)? as u16).to_le_bytes());
    let f = l.op.fields();
    let (ko, kk, ks, kp, kg, bias) = (f.out, f.k, f.stride, f.pad, f.groups, f.bias);
    if let Some(a) = f.act {
        out[2] = act_code(a);
    }
    out[6..8].copy_from_slice(&(narrow(f.other, 0xFFFF)? as u16).to_le_bytes());
    out[1] = bias as u8;
    out[8..12].copy_from_slice(&(narrow(ko, u32::MAX as usize)? as u32).to_le_bytes());
    out[12] = narrow(kk, 255)? as u8;
    out[13] = narrow(ks, 255)? as u8;
    out[14] = narrow(kp, 255)? as u8;
    out[16..20].copy_from_slice(&(narrow(kg, u32::MAX as usize)? as u32).to_le_bytes());
    Ok(())
}

/// Reads one 20-byte layer record (see [`encode_layer`]).
pub fn decode_layer(b: &[u8]) -> Result<Layer, ExportError> {
    if b.len() < LAYER_BYTES || b[15] != 0 {
        return Err(ExportError::BadLayer);
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let src = match b[3] {
        0 => Src::Prev,
        1 => Src::Input,
        2 => Src::Node(u16_at(4)),
        _ => return Err(ExportError::BadLayer),
    };
    let (o, k, s, p, g) = (
        u32_at(b, 8) as usize,
        b[12] as usize,
        b[13] as usize,
        b[14] as usize,
        u32_at(b, 16) as usize,
    );
    let bias = match b[1] {
        0 => false,
        1 => true,
        _ => return Err(ExportError::BadLayer),
    };
    let f = OpFields {
        out: o,
        k,
        stride: s,
        pad: p,
        groups: g,
        bias,
        act: act_from(b[2]),
        other: u16_at(6),
    };
    let op = Op::from_fields(b[0], &f).ok_or(ExportError::BadLayer)?;
    let canonical = Layer::new(op).from(src);
    let mut again = [0u8; LAYER_BYTES];
    encode_layer(&canonical, &mut again)?;
    if again[..] != b[..LAYER_BYTES] {
        // fields a layer does not use must be zero
        return Err(ExportError::BadLayer);
    }
    Ok(canonical)
}

/// Writes a version-2 file: the layer list, the input shape and loss, θ
/// and the state (running statistics); returns the bytes written.
pub fn encode_v2(
    layers: &[Layer],
    input: Dims,
    loss: Loss,
    theta: &[f32],
    state: &[f32],
    out: &mut [u8],
) -> Result<usize, ExportError> {
    if layers.is_empty() || layers.len() > MAX_FILE_LAYERS {
        return Err(ExportError::BadLayer);
    }
    if theta.iter().chain(state).any(|t| !t.is_finite()) {
        return Err(ExportError::NonFinite);
    }
    let n = file_len_v2(layers.len(), theta.len(), state.len());
    if out.len() < n {
        return Err(ExportError::BufferTooSmall);
    }
    let out = &mut out[..n];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION_2.to_le_bytes());
    out[6..8].copy_from_slice(&(layers.len() as u16).to_le_bytes());
    out[8] = match loss {
        Loss::SoftmaxCe => 0,
        Loss::Mse => 1,
    };
    out[9..12].fill(0);
    for (i, d) in [input.c, input.h, input.w].into_iter().enumerate() {
        let d = u32::try_from(d).map_err(|_| ExportError::BadShape)?;
        out[12 + 4 * i..16 + 4 * i].copy_from_slice(&d.to_le_bytes());
    }
    let mut o = HEADER_2;
    for l in layers {
        let mut rec = [0u8; LAYER_BYTES];
        encode_layer(l, &mut rec)?;
        out[o..o + LAYER_BYTES].copy_from_slice(&rec);
        o += LAYER_BYTES;
    }
    for c in [theta.len(), state.len()] {
        let c = u32::try_from(c).map_err(|_| ExportError::BadShape)?;
        out[o..o + 4].copy_from_slice(&c.to_le_bytes());
        o += 4;
    }
    for t in theta.iter().chain(state) {
        out[o..o + 4].copy_from_slice(&t.to_le_bytes());
        o += 4;
    }
    let h = fnv1a(&out[..o]);
    out[o..o + 4].copy_from_slice(&h.to_le_bytes());
    Ok(n)
}

/// Reads and checks a version-2 header: sizes and checksum.
pub fn decode_header(bytes: &[u8]) -> Result<Header, ExportError> {
    if version(bytes)? != VERSION_2 {
        return Err(ExportError::BadVersion(VERSION));
    }
    let need = |n: usize| {
        if bytes.len() < n {
            Err(ExportError::Truncated {
                needed: n,
                got: bytes.len(),
            })
        } else {
            Ok(())
        }
    };
    need(HEADER_2)?;
    let layers = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    if layers == 0 || layers > MAX_FILE_LAYERS || bytes[9..12] != [0, 0, 0] {
        return Err(ExportError::BadShape);
    }
    let loss = match bytes[8] {
        0 => Loss::SoftmaxCe,
        1 => Loss::Mse,
        _ => return Err(ExportError::BadShape),
    };
    let dim = |i: usize| {
        let v = u32_at(bytes, 12 + 4 * i);
        if v == 0 || v > (1 << 24) {
            Err(ExportError::BadShape)
        } else {
            Ok(v as usize)
        }
    };
    let input = Dims::new(dim(0)?, dim(1)?, dim(2)?);
    let counts = HEADER_2 + LAYER_BYTES * layers;
    need(counts + 8)?;
    let (params, state) = (
        u32_at(bytes, counts) as usize,
        u32_at(bytes, counts + 4) as usize,
    );
    if params > (1 << 30) || state > (1 << 30) {
        return Err(ExportError::BadShape);
    }
    let n = file_len_v2(layers, params, state);
    need(n)?;
    if bytes.len() > n {
        return Err(ExportError::TrailingBytes);
    }
    if fnv1a(&bytes[..n - 4]) != u32_at(bytes, n - 4) {
        return Err(ExportError::BadChecksum);
    }
    Ok(Header {
        layers,
        input,
        loss,
        params,
        state,
    })
}

/// Reads the layers of a version-2 file into `out` (at least
/// [`Header::layers`] entries); returns the header.
pub fn decode_layers(bytes: &[u8], out: &mut [Layer]) -> Result<Header, ExportError> {
    let h = decode_header(bytes)?;
    if out.len() < h.layers {
        return Err(ExportError::BufferTooSmall);
    }
    for (i, l) in out.iter_mut().take(h.layers).enumerate() {
        let o = HEADER_2 + LAYER_BYTES * i;
        *l = decode_layer(&bytes[o..o + LAYER_BYTES])?;
    }
    Ok(h)
}

/// Reads θ and the state of a version-2 file (exactly P and S entries, or
/// an empty `state` to skip it); rejects non-finite values.
pub fn decode_weights(
    bytes: &[u8],
    theta: &mut [f32],
    state: &mut [f32],
) -> Result<Header, ExportError> {
    let h = decode_header(bytes)?;
    if theta.len() != h.params || !(state.is_empty() || state.len() == h.state) {
        return Err(ExportError::BufferTooSmall);
    }
    let start = HEADER_2 + LAYER_BYTES * h.layers + 8;
    for (i, t) in theta.iter_mut().enumerate() {
        let v = f32::from_bits(u32_at(bytes, start + 4 * i));
        if !v.is_finite() {
            return Err(ExportError::NonFinite);
        }
        *t = v;
    }
    let start = start + 4 * h.params;
    for (i, t) in state.iter_mut().enumerate() {
        let v = f32::from_bits(u32_at(bytes, start + 4 * i));
        if !v.is_finite() {
            return Err(ExportError::NonFinite);
        }
        *t = v;
    }
    Ok(h)
}

/// The layer list of a weight file of either version (version 1: the
/// MLP's `Linear, σ, …, Linear`) written into `out` (at most
/// `out.len()` layers), with the input shape and the loss; returns the
/// number of layers. Checks sizes and checksum.
pub fn decode_model(bytes: &[u8], out: &mut [Layer]) -> Result<(usize, Dims, Loss), ExportError> {
    if version(bytes)? == VERSION_2 {
        let h = decode_header(bytes)?;
        if h.layers > out.len() {
            return Err(ExportError::BufferTooSmall);
        }
        decode_layers(bytes, out)?;
        return Ok((h.layers, h.input, h.loss));
    }
    let shape = decode_shape(bytes)?;
    let (ls, k) = crate::mlp::layers(&shape);
    if k > out.len() {
        return Err(ExportError::BufferTooSmall);
    }
    out[..k].copy_from_slice(&ls[..k]);
    Ok((k, Dims::flat(shape.inputs()), shape.loss))
}

/// θ of a weight file of either version into `theta` (exactly P
/// entries); rejects non-finite weights.
pub fn decode_theta(bytes: &[u8], theta: &mut [f32]) -> Result<(), ExportError> {
    if version(bytes)? == VERSION_2 {
        return decode_weights(bytes, theta, &mut []).map(|_| ());
    }
    decode(bytes, None, theta).map(|_| ())
}

/// The MLP shape of a version-2 file whose layers are `Linear, σ, …,
/// Linear` (one hidden activation, biases) on a vector input.
fn mlp_of_v2(bytes: &[u8]) -> Result<Shape, ExportError> {
    let h = decode_header(bytes)?;
    let mut layers = [Layer::flatten(); 2 * MAX_LAYERS - 1];
    if h.layers > layers.len() {
        return Err(ExportError::NotMlp);
    }
    decode_layers(bytes, &mut layers)?;
    let mut dims = [0usize; MAX_LAYERS + 1];
    dims[0] = h.input.len();
    let (mut n, mut act) = (0usize, None::<Act>);
    for (i, l) in layers[..h.layers].iter().enumerate() {
        if l.src != Src::Prev {
            return Err(ExportError::NotMlp);
        }
        match l.op {
            Op::Linear { out, bias: true } if n < MAX_LAYERS => {
                // hidden layers are followed by the same activation
                n += 1;
                dims[n] = out;
                let last = i + 1 == h.layers;
                if !last && !matches!(layers[i + 1].op, Op::Act(_)) && act.is_some() {
                    return Err(ExportError::NotMlp);
                }
            }
            Op::Act(a)
                if i > 0 && matches!(layers[i - 1].op, Op::Linear { .. }) && i + 1 < h.layers =>
            {
                match act {
                    Some(b) if b != a => return Err(ExportError::NotMlp),
                    _ => act = Some(a),
                }
            }
            _ => return Err(ExportError::NotMlp),
        }
    }
    if !h.input.is_flat() && h.input.len() != dims[0] {
        return Err(ExportError::NotMlp);
    }
    let shape = Shape::try_new(&dims[..=n], act.unwrap_or(Act::Identity), h.loss)
        .map_err(|_| ExportError::NotMlp)?;
    // the canonical layer list of that shape must be exactly the file's
    let (want, k) = crate::mlp::layers(&shape);
    if k != h.layers || want[..k] != layers[..k] || h.params != shape.param_count() || h.state != 0
    {
        return Err(ExportError::NotMlp);
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

    #[test]
    fn v2_round_trip_and_corruption() {
        let layers = [
            Layer::conv(4, 3).pad(1).no_bias(),
            Layer::batch_norm(),
            Layer::act(Act::Relu),
            Layer::conv(4, 1).stride(2).from(Src::Node(2)),
            Layer::max_pool(2).from(Src::Node(2)),
            Layer::add(3),
            Layer::global_avg_pool(),
            Layer::linear(3),
        ];
        let input = Dims::new(2, 6, 6);
        let theta: [f32; 17] = core::array::from_fn(|i| i as f32 * 0.5 - 2.0);
        let state = [0.1f32, 0.2, 0.3, 0.4, 1.0, 1.1, 1.2, 1.3];
        let mut buf = [0u8; 512];
        let n = encode_v2(&layers, input, Loss::SoftmaxCe, &theta, &state, &mut buf).unwrap();
        let buf = &buf[..n];
        let mut back = [Layer::flatten(); 8];
        let h = decode_layers(buf, &mut back).unwrap();
        assert_eq!((h.layers, h.input, h.params, h.state), (8, input, 17, 8));
        assert_eq!(back, layers);
        let (mut t, mut s) = ([0.0f32; 17], [0.0f32; 8]);
        decode_weights(buf, &mut t, &mut s).unwrap();
        assert_eq!((t, s), (theta, state));
        assert_eq!(decode_shape(buf), Err(ExportError::NotMlp));
        for k in 0..n {
            assert!(decode_layers(&buf[..k], &mut back).is_err());
        }
        for i in 0..n {
            let mut c = [0u8; 512];
            c[..n].copy_from_slice(buf);
            c[i] ^= 0x04;
            assert!(decode_weights(&c[..n], &mut t, &mut s).is_err(), "byte {i}");
        }
    }

    #[test]
    fn v2_mlp_reads_as_a_shape() {
        let (ls, k) = crate::mlp::layers(&S);
        let theta: [f32; S.param_count()] = core::array::from_fn(|i| i as f32 * 0.25 - 1.0);
        let mut buf = [0u8; 256];
        let n = encode_v2(
            &ls[..k],
            Dims::flat(3),
            Loss::SoftmaxCe,
            &theta,
            &[],
            &mut buf,
        )
        .unwrap();
        let mut back = [0.0f32; S.param_count()];
        assert_eq!(decode(&buf[..n], Some(&S), &mut back), Ok(S));
        assert_eq!(back, theta);
    }
}
