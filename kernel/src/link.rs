//! The sample link of on-device learning: a small framed protocol between
//! a host and a device (UART on QEMU's mps2-an386 CMSDK UART and on
//! boards), the one definition for the firmware and the host. The host
//! sends samples to learn from ([`Request::Learn`]) or to classify
//! ([`Request::Predict`]), asks for the device's state ([`Request::Status`])
//! and weights ([`Request::Pull`]), or restores the factory model
//! ([`Request::FactoryReset`]); the device answers every request with one
//! [`Reply`], a NACK with a [`Reason`] when the request is bad. So one image
//! learns from any stream: the samples are no longer built into it.
//!
//! # Frames
//!
//! Every frame, either way, is (integers little-endian):
//!
//! | offset    | bytes | field                                                       |
//! |-----------|-------|-------------------------------------------------------------|
//! | 0         | 2     | [`MAGIC`] `FD 4C`                                           |
//! | 2         | 1     | type ([`Kind`])                                             |
//! | 3         | 2     | sequence number (u16; a reply echoes its request's)         |
//! | 5         | 2     | payload length L (u16, ≤ [`MAX_PAYLOAD`])                   |
//! | 7         | 1     | header check: CRC-8 (poly 0x07, init 0) of bytes 2..7       |
//! | 8         | L     | payload                                                     |
//! | 8 + L     | 4     | CRC-32 (IEEE, as zlib: `crc32`) of bytes 2..8 + L           |
//!
//! A frame is [`OVERHEAD`] = 12 bytes plus its payload, at most
//! [`MAX_FRAME`] bytes.
//!
//! # Requests (host → device) and replies (device → host)
//!
//! | type | request        | payload                                               | reply            |
//! |------|----------------|-------------------------------------------------------|------------------|
//! | 0x01 | Learn          | encoding u8, label u16, x (D values)                  | Ack              |
//! | 0x02 | Predict        | encoding u8, x (D values)                             | Prediction       |
//! | 0x03 | Status         | (empty)                                               | Report           |
//! | 0x04 | Pull           | offset u32, count u16                                 | Weights          |
//! | 0x05 | FactoryReset   | (empty)                                               | Report (after it)|
//! | 0x06 | Save           | (empty): persist the state now                        | Report (after it)|
//!
//! | type | reply          | payload                                               |
//! |------|----------------|-------------------------------------------------------|
//! | 0x80 | Nack           | reason u8 ([`Reason`]), detail u32                    |
//! | 0x81 | Ack            | class u16 predicted before the step, loss f32 of it   |
//! | 0x82 | Prediction     | class u16, scores f32 × K (K = (L − 2) / 4)           |
//! | 0x83 | Report         | [`Status`]: 51 bytes, see [`Status`]                  |
//! | 0x84 | Weights        | offset u32, total u32, values f32 × n (n = (L − 8) / 4)|
//!
//! The inputs x of Learn and Predict are D = [`LinkModel::inputs`] values in
//! one of two [`Encoding`]s: 0 = u8 (one byte each, e.g. pixels, as the
//! sample [`stream`](crate::stream) stores them; the device scales them as
//! it scales stream samples) or 1 = f32 (four bytes each, inputs already
//! normalised by the host, used as they are).
//!
//! The Ack of a learn request carries the class the model predicted for x
//! *before* learning from it, so the host counts prequential (test, then
//! train) accuracy, and the loss the step returned.
//!
//! Weights are pulled in chunks: the device sends at most [`MAX_WEIGHTS`]
//! values, and fewer when fewer remain or its transmit buffer is smaller;
//! the host asks again from `offset + n` until it has `total`.
//!
//! # Exchange
//!
//! The host sends one request and waits for the reply with its sequence
//! number; after a timeout it resends the same frame. The device answers
//! every frame it decodes (a reply, or a NACK for a bad frame, echoing the
//! sequence number as received) and ignores bytes that are not a frame.
//!
//! ```
//! use fdgr_kernel::link::*;
//!
//! // Host: a learn request, 4 pixels labelled 2, as frame 7.
//! let mut wire = [0u8; 64];
//! let n = Request::Learn { x: Input::U8(&[0, 16, 255, 3]), label: 2 }
//!     .encode(7, &mut wire)
//!     .unwrap();
//!
//! // Device: decode byte by byte, check against the model, act, reply.
//! let model = LinkModel::new(4, 3, 100);
//! let mut dec: Decoder<64> = Decoder::new();
//! let mut out = [0u8; 64];
//! let mut reply_len = 0;
//! for &b in &wire[..n] {
//!     let reply = match dec.push(b) {
//!         None => continue,
//!         Some(Err(e)) => e.nack().map(|(seq, nack)| (seq, Reply::Nack(nack))),
//!         Some(Ok(frame)) => Some((
//!             frame.seq,
//!             match parse_request(&frame, &model) {
//!                 Ok(Command::Learn(sample)) => {
//!                     // Only a checked Sample reaches the model.
//!                     assert_eq!(sample.label(), 2);
//!                     Reply::Ack { class: 1, loss: 0.9 }
//!                 }
//!                 Ok(_) => Reply::Nack(Nack::new(Reason::Unsupported, frame.kind.into())),
//!                 Err(nack) => Reply::Nack(nack),
//!             },
//!         )),
//!     };
//!     if let Some((seq, r)) = reply {
//!         reply_len = r.encode(seq, &mut out).unwrap();
//!     }
//! }
//!
//! // Host: read the reply.
//! let mut dec: Decoder<64> = Decoder::new();
//! let (taken, frame) = dec.feed(&out[..reply_len]);
//! let frame = frame.unwrap().unwrap();
//! assert_eq!((taken, frame.seq), (reply_len, 7));
//! assert_eq!(parse_reply(&frame), Ok(Reply::Ack { class: 1, loss: 0.9 }));
//! ```
//!
//! # Bad frames
//!
//! [`Decoder`] takes one byte at a time and never panics or indexes out of
//! bounds, whatever it is fed. A frame whose header check, length or CRC is
//! bad is reported as a [`LinkError`] ([`LinkError::nack`] gives the NACK);
//! a good frame is then checked against the model by [`parse_request`]
//! (type, payload length, encoding, shape, label, NaN/Inf and range of x):
//! only [`Sample`] and [`Query`] values, which nothing but these checks
//! creates, reach a model, so a bad frame cannot. The code of this module
//! is denied indexing, slicing, `unwrap`, `expect` and `panic!` (clippy),
//! and its tests feed 500,000 random and mutated frames through a decoder
//! and the checks.
//!
//! # Why this design
//!
//! * **A header check byte** (besides the frame's CRC-32): without it a
//!   corrupted length field makes the decoder swallow up to 4 KiB of later
//!   traffic before the CRC fails, and the host sees nothing until it times
//!   out. With it, a corrupted type, sequence number or length is caught
//!   after 8 bytes and NACKed at once (CRC-8 with poly 0x07 detects every
//!   error of up to 3 bits in the 5 header bytes, and bursts of up to 8).
//!   After a bad header the decoder also re-scans those header bytes for
//!   [`MAGIC`], so a frame that follows a stray magic pair is not lost.
//! * **Oversized frames are skipped, not scanned**: a frame with a good
//!   header whose length exceeds the decoder's capacity (a legal frame for a
//!   bigger device) is NACKed and its bytes are skipped, so nothing inside
//!   its payload is mistaken for a frame. A length over [`MAX_PAYLOAD`] is
//!   never legal, so it is treated as corruption and the decoder hunts for
//!   the next magic at once. Lengths are checked before any byte is
//!   buffered.
//! * **Retransmissions are idempotent** ([`Replay`]): a host that lost an
//!   Ack resends the same learn request (same sequence number, same bytes,
//!   so the same CRC); the device answers it with the recorded Ack instead
//!   of learning the sample twice, which would bias prequential accuracy.
//! * **A range limit** ([`LinkModel::limit`], default [`DEFAULT_LIMIT`]): a
//!   finite but huge f32 input (say 1e38) overflows the forward pass into
//!   Inf/NaN and corrupts the weights as surely as a NaN does.
//! * **The device states its shape and capacity** in [`Status`] (inputs,
//!   classes, parameters, largest payload accepted, protocol [`VERSION`]),
//!   so a host can drive any image without knowing its build.
//! * **FactoryReset answers with a Report** (the state after the reset), so
//!   it needs no reply type of its own.
//! * **The CRCs are computed bit by bit**, without a table: the smallest
//!   code, and at UART speeds the few cycles per byte do not matter.
//! * A frame-level CRC failure does not re-scan the buffered payload for a
//!   magic (that needs a second buffer or a shift of up to 4 KiB); a
//!   request/reply host recovers by resending after its timeout, and a
//!   firmware may call [`Decoder::reset`] when the line has been idle.

#![deny(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable
)]

use core::fmt;

use crate::ring;

/// The two bytes that start every frame.
pub const MAGIC: [u8; 2] = [0xFD, 0x4C];
/// Bytes before the payload: magic, type, sequence number, length, header
/// check.
pub const HEADER_LEN: usize = 8;
/// Bytes of the trailing CRC-32.
pub const CRC_LEN: usize = 4;
/// Bytes a frame adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// The largest payload of any frame; a longer declared length is rejected
/// before any payload byte is buffered.
pub const MAX_PAYLOAD: usize = 4096;
/// The largest frame.
pub const MAX_FRAME: usize = OVERHEAD + MAX_PAYLOAD;
/// The most weights one Weights frame holds.
pub const MAX_WEIGHTS: usize = (MAX_PAYLOAD - WEIGHTS_HEAD) / 4;
/// The version of this protocol, sent in [`Status::version`].
pub const VERSION: u8 = 2;
/// The default bound on |x| of f32 inputs ([`LinkModel::limit`]).
pub const DEFAULT_LIMIT: f32 = 1.0e6;

const PULL_LEN: usize = 6;
const ACK_LEN: usize = 6;
const NACK_LEN: usize = 5;
const WEIGHTS_HEAD: usize = 8;
/// Bytes of a [`Status`] payload.
pub const STATUS_LEN: usize = 51;

/// The bytes a frame with a payload of `payload` bytes takes.
pub const fn frame_len(payload: usize) -> usize {
    payload.saturating_add(OVERHEAD)
}

/// The identity of a model: FNV-1a 64 of the bytes of its exported model
/// file (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`). The
/// firmware computes it at compile time from the file it embeds (it is a
/// `const fn`) and reports it in [`Status::model_id`]; the host computes it
/// from the file it exported, so it knows which factory model a device
/// starts from. It names the factory model, not the current weights, which
/// change every step (pull them to compare those).
pub const fn model_id(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        #[allow(clippy::indexing_slicing)] // i < len
        let b = bytes[i];
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`; `"123456789"` gives
/// `0xCBF43926`), the checksum that ends every frame ([`crate::crc`]).
pub use crate::crc::crc32;

/// CRC-8 (poly 0x07, init 0, no reflection: CRC-8/SMBUS), the header check.
fn crc8(bytes: &[u8]) -> u8 {
    let mut c = 0u8;
    for &b in bytes {
        c ^= b;
        for _ in 0..8 {
            c = (c << 1) ^ (0x07 & (c >> 7).wrapping_neg());
        }
    }
    c
}

/// The type of a frame (its byte on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Kind {
    /// Request: learn from a labelled sample.
    Learn = 0x01,
    /// Request: classify inputs.
    Predict = 0x02,
    /// Request: the device's [`Status`].
    Status = 0x03,
    /// Request: a chunk of the current weights.
    Pull = 0x04,
    /// Request: restore the factory model.
    FactoryReset = 0x05,
    /// Request: save the learned state to flash now (a device also saves
    /// on its own every few steps).
    Save = 0x06,
    /// Reply: the request was rejected ([`Nack`]).
    Nack = 0x80,
    /// Reply to Learn.
    Ack = 0x81,
    /// Reply to Predict.
    Prediction = 0x82,
    /// Reply to Status, FactoryReset and Save.
    Report = 0x83,
    /// Reply to Pull.
    Weights = 0x84,
}

impl Kind {
    /// The kind of type byte `b`, if it is one.
    pub const fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Learn,
            0x02 => Kind::Predict,
            0x03 => Kind::Status,
            0x04 => Kind::Pull,
            0x05 => Kind::FactoryReset,
            0x06 => Kind::Save,
            0x80 => Kind::Nack,
            0x81 => Kind::Ack,
            0x82 => Kind::Prediction,
            0x83 => Kind::Report,
            0x84 => Kind::Weights,
            _ => return None,
        })
    }
}

/// Why a frame was rejected: the reason code of a NACK. The detail sent
/// with it is given for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Reason {
    /// 1: a checksum failed. Detail 0: the frame's CRC-32; 1: the header
    /// check (the echoed sequence number may then be corrupt too).
    Crc = 1,
    /// 2: the payload length is over the limit ([`MAX_PAYLOAD`] or the
    /// receiver's capacity), or does not fit the frame type's layout.
    /// Detail: the length.
    Length = 2,
    /// 3: an unknown type, or one the receiver does not take (a reply sent
    /// to the device, a request to the host). Detail: the type byte.
    Type = 3,
    /// 4: an unknown input encoding, NACK reason or protocol version in the
    /// payload. Detail: the value.
    Encoding = 4,
    /// 5: the number of inputs is not the model's. Detail: the number sent.
    Shape = 5,
    /// 6: an input is NaN or ±Inf. Detail: its index.
    NonFinite = 6,
    /// 7: an input's magnitude exceeds [`LinkModel::limit`]. Detail: its
    /// index.
    Range = 7,
    /// 8: the label is not below the number of classes. Detail: the label.
    Label = 8,
    /// 9: a pull starts past the last weight. Detail: the offset.
    Offset = 9,
    /// 10: the device cannot take the request now (e.g. it is saving).
    /// Detail: device-defined.
    Busy = 10,
    /// 11: a valid request this device does not implement. Detail: the
    /// type byte.
    Unsupported = 11,
    /// 12: the model step failed (e.g. a non-finite loss); the weights are
    /// those before the step. Detail: device-defined.
    Failed = 12,
}

impl Reason {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The reason of code `c`, if it is one.
    pub const fn from_code(c: u8) -> Option<Reason> {
        Some(match c {
            1 => Reason::Crc,
            2 => Reason::Length,
            3 => Reason::Type,
            4 => Reason::Encoding,
            5 => Reason::Shape,
            6 => Reason::NonFinite,
            7 => Reason::Range,
            8 => Reason::Label,
            9 => Reason::Offset,
            10 => Reason::Busy,
            11 => Reason::Unsupported,
            12 => Reason::Failed,
            _ => return None,
        })
    }

    /// A short name.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Crc => "crc",
            Reason::Length => "length",
            Reason::Type => "type",
            Reason::Encoding => "encoding",
            Reason::Shape => "shape",
            Reason::NonFinite => "non-finite",
            Reason::Range => "range",
            Reason::Label => "label",
            Reason::Offset => "offset",
            Reason::Busy => "busy",
            Reason::Unsupported => "unsupported",
            Reason::Failed => "failed",
        }
    }
}

/// A rejection: the payload of a NACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Nack {
    /// Why.
    pub reason: Reason,
    /// What, as documented for each [`Reason`].
    pub detail: u32,
}

impl Nack {
    /// A rejection for `reason` with `detail`.
    pub const fn new(reason: Reason, detail: u32) -> Nack {
        Nack { reason, detail }
    }
}

fn nack(reason: Reason, detail: usize) -> Nack {
    Nack::new(reason, u32::try_from(detail).unwrap_or(u32::MAX))
}

impl fmt::Display for Nack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason.name(), self.detail)
    }
}

/// A frame that could not be decoded or encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// The header check failed: type, sequence number and length cannot be
    /// trusted.
    Header {
        /// The sequence number as received.
        seq: u16,
    },
    /// The declared payload length is over [`MAX_PAYLOAD`] or the decoder's
    /// capacity; no payload byte was buffered.
    Length {
        /// The sequence number.
        seq: u16,
        /// The declared length.
        len: u16,
    },
    /// The CRC-32 does not match.
    Crc {
        /// The sequence number as received.
        seq: u16,
    },
    /// Encoding: the output buffer cannot hold the frame.
    BufferTooSmall,
    /// Encoding: the payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLong,
}

impl LinkError {
    /// For a decoding error, the sequence number to echo and the NACK to
    /// send; `None` for an encoding error.
    pub fn nack(&self) -> Option<(u16, Nack)> {
        match *self {
            LinkError::Header { seq } => Some((seq, Nack::new(Reason::Crc, 1))),
            LinkError::Length { seq, len } => Some((seq, Nack::new(Reason::Length, len.into()))),
            LinkError::Crc { seq } => Some((seq, Nack::new(Reason::Crc, 0))),
            LinkError::BufferTooSmall | LinkError::PayloadTooLong => None,
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Header { seq } => write!(f, "frame {seq}: bad header check"),
            LinkError::Length { seq, len } => {
                write!(f, "frame {seq}: payload of {len} bytes too long")
            }
            LinkError::Crc { seq } => write!(f, "frame {seq}: bad CRC"),
            LinkError::BufferTooSmall => write!(f, "output buffer too small"),
            LinkError::PayloadTooLong => write!(f, "payload over {MAX_PAYLOAD} bytes"),
        }
    }
}

/// A frame whose header and CRC are good; its payload is not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame<'a> {
    /// The type byte (see [`Kind::from_byte`]).
    pub kind: u8,
    /// The sequence number.
    pub seq: u16,
    /// The payload.
    pub payload: &'a [u8],
    /// The frame's CRC-32 (identical for a retransmission; see [`Replay`]).
    pub crc: u32,
}

/// f32 values: a slice, or the little-endian bytes of a received payload.
#[derive(Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct F32s<'a>(Repr<'a>);

#[derive(Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Repr<'a> {
    Slice(&'a [f32]),
    Le(&'a [u8]),
}

impl<'a> F32s<'a> {
    /// The values in `bytes`, four little-endian bytes each; `None` unless
    /// its length is a multiple of 4.
    pub fn from_le_bytes(bytes: &'a [u8]) -> Option<F32s<'a>> {
        (bytes.len() % 4 == 0).then_some(F32s(Repr::Le(bytes)))
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Slice(s) => s.len(),
            Repr::Le(b) => b.len() / 4,
        }
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<f32> {
        match self.0 {
            Repr::Slice(s) => s.get(i).copied(),
            Repr::Le(b) => {
                let (c, _) = b.get(i.checked_mul(4)?..)?.split_first_chunk::<4>()?;
                Some(f32::from_le_bytes(*c))
            }
        }
    }

    /// The values in order.
    pub fn iter(&self) -> F32Iter<'a> {
        F32Iter { v: *self, i: 0 }
    }
}

impl<'a> From<&'a [f32]> for F32s<'a> {
    fn from(s: &'a [f32]) -> F32s<'a> {
        F32s(Repr::Slice(s))
    }
}

impl PartialEq for F32s<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for F32s<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`F32s`].
#[derive(Clone, Debug)]
pub struct F32Iter<'a> {
    v: F32s<'a>,
    i: usize,
}

impl Iterator for F32Iter<'_> {
    type Item = f32;
    fn next(&mut self) -> Option<f32> {
        let x = self.v.get(self.i)?;
        self.i += 1;
        Some(x)
    }
}

/// How the inputs of Learn and Predict are sent (their first payload byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Encoding {
    /// 0: one byte per value (e.g. pixels), scaled by the device as it
    /// scales stream samples.
    U8 = 0,
    /// 1: four bytes per value, f32 little-endian, used as they are.
    F32 = 1,
}

/// Inputs, as the host sends them (not checked: see [`Query`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Input<'a> {
    /// Byte values.
    U8(&'a [u8]),
    /// f32 values.
    F32(F32s<'a>),
}

impl Input<'_> {
    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        match self {
            Input::U8(_) => Encoding::U8,
            Input::F32(_) => Encoding::F32,
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            Input::U8(b) => b.len(),
            Input::F32(v) => v.len(),
        }
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as sent (a byte as its integer value), if there is one.
    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Input::U8(b) => b.get(i).map(|&v| f32::from(v)),
            Input::F32(v) => v.get(i),
        }
    }

    fn write_values(&self, w: &mut Writer<'_>) {
        match self {
            Input::U8(b) => {
                w.bytes(b);
            }
            Input::F32(v) => {
                for x in v.iter() {
                    w.f32(x);
                }
            }
        }
    }
}

/// What the device's model takes: the checks of [`parse_request`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkModel {
    /// Inputs per sample (D).
    pub inputs: usize,
    /// Classes (K): labels are below it.
    pub classes: usize,
    /// Parameters (weights a pull may read).
    pub params: usize,
    /// The largest |x| of an f32 input (a NaN limit checks finiteness only).
    pub limit: f32,
}

impl LinkModel {
    /// A model of `inputs` inputs, `classes` classes and `params`
    /// parameters, with the [`DEFAULT_LIMIT`] on inputs.
    pub const fn new(inputs: usize, classes: usize, params: usize) -> LinkModel {
        LinkModel {
            inputs,
            classes,
            params,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// Inputs checked against a [`LinkModel`]: the model's number of values,
/// each finite and within its limit. Only [`parse_predict`] (and
/// [`parse_learn`]) make one.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Query<'a> {
    x: Input<'a>,
}

impl<'a> Query<'a> {
    /// The inputs as sent.
    pub fn input(&self) -> Input<'a> {
        self.x
    }

    /// The number of inputs (the model's).
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True for a model of no inputs.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Writes the inputs into `out` as the model takes them: bytes divided
    /// by `pixel_max` (as [`crate::ring::pixels_into`] scales stream
    /// samples), f32 values as they are; returns the number written (the
    /// smaller of the two lengths).
    pub fn fill(&self, pixel_max: f32, out: &mut [f32]) -> usize {
        let mut n = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let Some(v) = self.x.get(i) else { break };
            *o = match self.x {
                Input::U8(_) => v / pixel_max,
                Input::F32(_) => v,
            };
            n += 1;
        }
        n
    }
}

/// A labelled sample checked against a [`LinkModel`]: its inputs are a
/// [`Query`] and its label is below the number of classes. Only
/// [`parse_learn`] makes one, so a model step that takes a `Sample` cannot
/// see a bad frame. (Not to be confused with [`ring::Sample`], the stored
/// byte sample, which [`Sample::to_ring`] converts to.)
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sample<'a> {
    x: Query<'a>,
    label: u16,
}

impl<'a> Sample<'a> {
    /// The inputs.
    pub fn x(&self) -> Query<'a> {
        self.x
    }

    /// The label (below the model's classes).
    pub fn label(&self) -> u16 {
        self.label
    }

    /// The sample as the fine-tuner's ring stores it, when its inputs are
    /// `D` bytes and its label fits a byte.
    pub fn to_ring<const D: usize>(&self) -> Option<ring::Sample<D>> {
        let Input::U8(b) = self.x.x else { return None };
        Some(ring::Sample {
            x: <[u8; D]>::try_from(b).ok()?,
            label: u8::try_from(self.label).ok()?,
        })
    }
}

/// A request, as the host sends it ([`Request::encode`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Request<'a> {
    /// Learn from inputs `x` labelled `label`.
    Learn {
        /// The inputs.
        x: Input<'a>,
        /// The class.
        label: u16,
    },
    /// Classify inputs `x`.
    Predict {
        /// The inputs.
        x: Input<'a>,
    },
    /// Send the status.
    Status,
    /// Send up to `count` weights from `offset`.
    Pull {
        /// Index of the first weight.
        offset: u32,
        /// Weights wanted.
        count: u16,
    },
    /// Restore the factory model.
    FactoryReset,
    /// Save the learned state now.
    Save,
}

impl Request<'_> {
    /// The frame type.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Learn { .. } => Kind::Learn,
            Request::Predict { .. } => Kind::Predict,
            Request::Status => Kind::Status,
            Request::Pull { .. } => Kind::Pull,
            Request::FactoryReset => Kind::FactoryReset,
            Request::Save => Kind::Save,
        }
    }

    /// Writes the request as frame `seq` to the start of `out`; returns its
    /// length.
    pub fn encode(&self, seq: u16, out: &mut [u8]) -> Result<usize, LinkError> {
        let mut w = Writer::new(self.kind(), seq, out);
        match self {
            Request::Learn { x, label } => {
                w.u8(x.encoding() as u8);
                w.u16(*label);
                x.write_values(&mut w);
            }
            Request::Predict { x } => {
                w.u8(x.encoding() as u8);
                x.write_values(&mut w);
            }
            Request::Pull { offset, count } => {
                w.u32(*offset).u16(*count);
            }
            Request::Status | Request::FactoryReset | Request::Save => {}
        }
        w.finish()
    }
}

/// A request as the device acts on it: checked by [`parse_request`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Command<'a> {
    /// Predict the class of the sample (reply with [`Reply::Ack`] holding
    /// it), then learn from it.
    Learn(Sample<'a>),
    /// Reply with [`Reply::Prediction`].
    Predict(Query<'a>),
    /// Reply with [`Reply::Status`].
    Status,
    /// Reply with [`Reply::Weights`] holding weights `offset..offset +
    /// count` (`count` already clamped to the weights left and to
    /// [`MAX_WEIGHTS`]; a device may send fewer).
    Pull {
        /// Index of the first weight (at most the number of weights).
        offset: usize,
        /// Weights to send.
        count: usize,
    },
    /// Restore the factory model, then reply with [`Reply::Status`].
    FactoryReset,
    /// Save the learned state, then reply with [`Reply::Status`].
    Save,
}

/// The device's state: the payload of a Report, [`STATUS_LEN`] bytes in
/// this order.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Status {
    /// u8: the protocol version ([`VERSION`]).
    pub version: u8,
    /// u16: the largest payload the device accepts (≤ [`MAX_PAYLOAD`]).
    pub capacity: u16,
    /// u32: inputs per sample.
    pub inputs: u32,
    /// u32: classes.
    pub classes: u32,
    /// u32: parameters.
    pub params: u32,
    /// u64: [`model_id`] of the factory model.
    pub model_id: u64,
    /// u64: steps taken since the factory model.
    pub step: u64,
    /// u64: samples accepted since the factory model.
    pub seen: u64,
    /// u32: times the weights were saved.
    pub saves: u32,
    /// f32: the loss of the last step (NaN before the first).
    pub last_loss: f32,
    /// u32: the deepest the stack has been since boot, in bytes (from a
    /// painted stack; 0 where the device does not measure it).
    pub stack_peak: u32,
}

/// A reply, as the device sends it ([`Reply::encode`]) and the host reads
/// it ([`parse_reply`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reply<'a> {
    /// The request was rejected.
    Nack(Nack),
    /// A sample was learnt from.
    Ack {
        /// The class predicted before the step.
        class: u16,
        /// The loss the step returned.
        loss: f32,
    },
    /// A prediction.
    Prediction {
        /// The predicted class (the largest score).
        class: u16,
        /// The model's outputs, one per class.
        scores: F32s<'a>,
    },
    /// The device's state.
    Status(Status),
    /// A chunk of the current weights.
    Weights {
        /// Index of the first value.
        offset: u32,
        /// Weights in the model.
        total: u32,
        /// The values.
        values: F32s<'a>,
    },
}

impl Reply<'_> {
    /// The frame type.
    pub fn kind(&self) -> Kind {
        match self {
            Reply::Nack(_) => Kind::Nack,
            Reply::Ack { .. } => Kind::Ack,
            Reply::Prediction { .. } => Kind::Prediction,
            Reply::Status(_) => Kind::Report,
            Reply::Weights { .. } => Kind::Weights,
        }
    }

    /// Writes the reply as frame `seq` to the start of `out`; returns its
    /// length.
    pub fn encode(&self, seq: u16, out: &mut [u8]) -> Result<usize, LinkError> {
        let mut w = Writer::new(self.kind(), seq, out);
        match self {
            Reply::Nack(n) => {
                w.u8(n.reason.code()).u32(n.detail);
            }
            Reply::Ack { class, loss } => {
                w.u16(*class).f32(*loss);
            }
            Reply::Prediction { class, scores } => {
                w.u16(*class);
                for s in scores.iter() {
                    w.f32(s);
                }
            }
            Reply::Status(s) => {
                w.u8(s.version).u16(s.capacity);
                w.u32(s.inputs).u32(s.classes).u32(s.params);
                w.u64(s.model_id).u64(s.step).u64(s.seen);
                w.u32(s.saves).f32(s.last_loss).u32(s.stack_peak);
            }
            Reply::Weights {
                offset,
                total,
                values,
            } => {
                w.u32(*offset).u32(*total);
                for v in values.iter() {
                    w.f32(v);
                }
            }
        }
        w.finish()
    }
}

/// Writes one frame into a caller's buffer, payload field by field: what
/// [`encode`], [`Request::encode`] and [`Reply::encode`] use, and what a
/// device uses to send weights it does not hold in one slice. Errors are
/// kept until [`Writer::finish`]; nothing is written past the buffer.
pub struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
    err: Option<LinkError>,
}

impl<'o> Writer<'o> {
    /// Starts frame `seq` of type `kind` in `out`.
    pub fn new(kind: Kind, seq: u16, out: &'o mut [u8]) -> Writer<'o> {
        Writer::raw(kind as u8, seq, out)
    }

    fn raw(kind: u8, seq: u16, out: &'o mut [u8]) -> Writer<'o> {
        let err = match out.first_chunk_mut::<5>() {
            Some(h) => {
                let [s0, s1] = seq.to_le_bytes();
                *h = [MAGIC[0], MAGIC[1], kind, s0, s1];
                None
            }
            None => Some(LinkError::BufferTooSmall),
        };
        Writer {
            out,
            at: HEADER_LEN,
            err,
        }
    }

    /// Appends bytes to the payload.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if self.err.is_none() {
            let end = self.at.saturating_add(b.len());
            if end - HEADER_LEN > MAX_PAYLOAD {
                self.err = Some(LinkError::PayloadTooLong);
            } else if let Some(d) = self.out.get_mut(self.at..end) {
                d.copy_from_slice(b);
                self.at = end;
            } else {
                self.err = Some(LinkError::BufferTooSmall);
            }
        }
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    /// Appends a u16, little-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a u32, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a u64, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends an f32, little-endian.
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Completes the frame (length, header check, CRC); returns its length.
    pub fn finish(self) -> Result<usize, LinkError> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let n = self.at - HEADER_LEN;
        let len = u16::try_from(n).map_err(|_| LinkError::PayloadTooLong)?;
        let end = self.at + CRC_LEN;
        let frame = self.out.get_mut(..end).ok_or(LinkError::BufferTooSmall)?;
        let (head, rest) = frame
            .split_first_chunk_mut::<HEADER_LEN>()
            .ok_or(LinkError::BufferTooSmall)?;
        let (payload, tail) = rest
            .split_at_mut_checked(n)
            .ok_or(LinkError::BufferTooSmall)?;
        let [_, _, kind, s0, s1, ..] = *head;
        let [l0, l1] = len.to_le_bytes();
        let check = crc8(&[kind, s0, s1, l0, l1]);
        *head = [MAGIC[0], MAGIC[1], kind, s0, s1, l0, l1, check];
        let crc = ![kind, s0, s1, l0, l1, check]
            .iter()
            .chain(payload.iter())
            .fold(!0u32, |c, &b| crate::crc::update(c, &[b]));
        let slot = tail
            .first_chunk_mut::<CRC_LEN>()
            .ok_or(LinkError::BufferTooSmall)?;
        *slot = crc.to_le_bytes();
        Ok(end)
    }
}

/// Writes a frame of type `kind`, sequence number `seq` and `payload` to
/// the start of `out`; returns its length ([`frame_len`] of the payload).
pub fn encode(kind: Kind, seq: u16, payload: &[u8], out: &mut [u8]) -> Result<usize, LinkError> {
    let mut w = Writer::new(kind, seq, out);
    w.bytes(payload);
    w.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Hunt,
    Magic,
    Header,
    Payload,
    Crc,
    Skip,
}

enum Event {
    None,
    Frame,
    Error(LinkError),
}

/// A byte-at-a-time frame decoder holding payloads of up to `N` bytes (and
/// never more than [`MAX_PAYLOAD`]): [`Decoder::push`] each received byte.
/// It hunts for [`MAGIC`], so it resynchronises after garbage by itself.
pub struct Decoder<const N: usize> {
    buf: [u8; N],
    head: [u8; 6],
    state: State,
    at: usize,
    len: usize,
    crc: u32,
    rx: u32,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// The largest payload this decoder accepts.
    pub const CAPACITY: usize = if N < MAX_PAYLOAD { N } else { MAX_PAYLOAD };

    /// A decoder waiting for a frame.
    pub const fn new() -> Self {
        Decoder {
            buf: [0; N],
            head: [0; 6],
            state: State::Hunt,
            at: 0,
            len: 0,
            crc: 0,
            rx: 0,
        }
    }

    /// Drops any partial frame and waits for the next magic (e.g. when the
    /// line has been idle longer than a frame takes).
    pub fn reset(&mut self) {
        self.state = State::Hunt;
    }

    /// True when no frame is under way.
    pub fn is_idle(&self) -> bool {
        self.state == State::Hunt
    }

    /// Takes one received byte: `None` while a frame is incomplete (or the
    /// byte is garbage); a frame with a good header and CRC; or why a frame
    /// was dropped.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame<'_>, LinkError>> {
        let e = self.step(byte);
        self.event(e)
    }

    /// Takes received bytes up to the first frame or error: returns how
    /// many bytes it took and what [`Decoder::push`] gave for the last of
    /// them (`None` when all were taken without one). Feed the rest again:
    /// a loop over [`Decoder::push`] cannot return the borrowed frame.
    pub fn feed(&mut self, bytes: &[u8]) -> (usize, Option<Result<Frame<'_>, LinkError>>) {
        for (i, &b) in bytes.iter().enumerate() {
            match self.step(b) {
                Event::None => {}
                e => return (i + 1, self.event(e)),
            }
        }
        (bytes.len(), None)
    }

    fn event(&self, e: Event) -> Option<Result<Frame<'_>, LinkError>> {
        match e {
            Event::None => None,
            Event::Error(e) => Some(Err(e)),
            Event::Frame => {
                let [kind, s0, s1, ..] = self.head;
                Some(Ok(Frame {
                    kind,
                    seq: u16::from_le_bytes([s0, s1]),
                    payload: self.buf.get(..self.len).unwrap_or(&[]),
                    crc: self.rx,
                }))
            }
        }
    }

    fn seq(&self) -> u16 {
        let [_, s0, s1, ..] = self.head;
        u16::from_le_bytes([s0, s1])
    }

    fn step(&mut self, byte: u8) -> Event {
        match self.state {
            State::Hunt => {
                if byte == MAGIC[0] {
                    self.state = State::Magic;
                }
            }
            State::Magic => {
                if byte == MAGIC[1] {
                    self.state = State::Header;
                    self.at = 0;
                    self.crc = !0;
                } else if byte != MAGIC[0] {
                    self.state = State::Hunt;
                }
            }
            State::Header => {
                if let Some(h) = self.head.get_mut(self.at) {
                    *h = byte;
                }
                self.at += 1;
                self.crc = crate::crc::update(self.crc, &[byte]);
                if self.at >= self.head.len() {
                    return self.header();
                }
            }
            State::Payload => {
                if let Some(b) = self.buf.get_mut(self.at) {
                    *b = byte;
                }
                self.at += 1;
                self.crc = crate::crc::update(self.crc, &[byte]);
                if self.at >= self.len {
                    self.start_crc();
                }
            }
            State::Crc => {
                self.rx |= u32::from(byte) << (8 * (self.at & 3));
                self.at += 1;
                if self.at >= CRC_LEN {
                    self.state = State::Hunt;
                    return if self.rx == !self.crc {
                        Event::Frame
                    } else {
                        Event::Error(LinkError::Crc { seq: self.seq() })
                    };
                }
            }
            State::Skip => {
                self.at += 1;
                if self.at >= self.len {
                    self.state = State::Hunt;
                }
            }
        }
        Event::None
    }

    fn start_crc(&mut self) {
        self.state = State::Crc;
        self.at = 0;
        self.rx = 0;
    }

    fn header(&mut self) -> Event {
        let [kind, s0, s1, l0, l1, check] = self.head;
        let seq = u16::from_le_bytes([s0, s1]);
        if crc8(&[kind, s0, s1, l0, l1]) != check {
            // The magic may have been garbage: look for one in the bytes
            // taken as a header (they cannot complete another header).
            let head = self.head;
            self.state = State::Hunt;
            for b in head {
                self.step(b);
            }
            return Event::Error(LinkError::Header { seq });
        }
        let len = u16::from_le_bytes([l0, l1]);
        let n = usize::from(len);
        if n > Self::CAPACITY {
            if n <= MAX_PAYLOAD {
                // A legal frame too big for this decoder: skip it whole.
                self.state = State::Skip;
                self.at = 0;
                self.len = n + CRC_LEN;
            } else {
                self.state = State::Hunt;
            }
            return Event::Error(LinkError::Length { seq, len });
        }
        self.len = n;
        self.at = 0;
        if n == 0 {
            self.start_crc();
        } else {
            self.state = State::Payload;
        }
        Event::None
    }
}

/// Reads a payload front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const K: usize>(&mut self) -> Option<[u8; K]> {
        let (h, t) = self.0.split_first_chunk::<K>()?;
        self.0 = t;
        Some(*h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn f32(&mut self) -> Option<f32> {
        self.take().map(f32::from_le_bytes)
    }
}

fn expect_kind(frame: &Frame<'_>, kind: Kind) -> Result<(), Nack> {
    if frame.kind == kind as u8 {
        Ok(())
    } else {
        Err(nack(Reason::Type, frame.kind.into()))
    }
}

fn length(frame: &Frame<'_>) -> Nack {
    nack(Reason::Length, frame.payload.len())
}

/// The inputs of a Learn or Predict payload of `payload` bytes: a known
/// encoding, a whole number of values, the model's number of them.
fn input<'a>(
    tag: u8,
    body: &'a [u8],
    payload: usize,
    model: &LinkModel,
) -> Result<Input<'a>, Nack> {
    let x = match tag {
        0 => Input::U8(body),
        1 => Input::F32(F32s::from_le_bytes(body).ok_or(nack(Reason::Length, payload))?),
        t => return Err(nack(Reason::Encoding, t.into())),
    };
    if x.len() != model.inputs {
        return Err(nack(Reason::Shape, x.len()));
    }
    Ok(x)
}

/// Every value of `x` finite and within the model's limit.
fn query<'a>(x: Input<'a>, model: &LinkModel) -> Result<Query<'a>, Nack> {
    if let Input::F32(v) = x {
        for (i, v) in v.iter().enumerate() {
            if !v.is_finite() {
                return Err(nack(Reason::NonFinite, i));
            }
            if v > model.limit || v < -model.limit {
                return Err(nack(Reason::Range, i));
            }
        }
    }
    Ok(Query { x })
}

/// Checks a Learn frame against `model`: type, payload length, encoding,
/// length again (whole f32 values), shape, label, then every input (finite,
/// within the limit), in that order; the first failure is the NACK.
pub fn parse_learn<'a>(frame: &Frame<'a>, model: &LinkModel) -> Result<Sample<'a>, Nack> {
    expect_kind(frame, Kind::Learn)?;
    let mut r = Reader(frame.payload);
    let (Some(tag), Some(label)) = (r.u8(), r.u16()) else {
        return Err(length(frame));
    };
    let x = input(tag, r.0, frame.payload.len(), model)?;
    if usize::from(label) >= model.classes {
        return Err(nack(Reason::Label, label.into()));
    }
    Ok(Sample {
        x: query(x, model)?,
        label,
    })
}

/// Checks a Predict frame against `model`: type, payload length, encoding,
/// length again, shape, then every input.
pub fn parse_predict<'a>(frame: &Frame<'a>, model: &LinkModel) -> Result<Query<'a>, Nack> {
    expect_kind(frame, Kind::Predict)?;
    let Some((&tag, body)) = frame.payload.split_first() else {
        return Err(length(frame));
    };
    query(input(tag, body, frame.payload.len(), model)?, model)
}

/// Checks any request frame against `model` (see [`parse_learn`] and
/// [`parse_predict`]); a frame that is not a request is a [`Reason::Type`]
/// NACK, and Status, Pull and FactoryReset must have exactly their
/// payload's length. A pull's count is clamped (see [`Command::Pull`]).
pub fn parse_request<'a>(frame: &Frame<'a>, model: &LinkModel) -> Result<Command<'a>, Nack> {
    let fixed = |len: usize| {
        if frame.payload.len() == len {
            Ok(())
        } else {
            Err(length(frame))
        }
    };
    match Kind::from_byte(frame.kind) {
        Some(Kind::Learn) => parse_learn(frame, model).map(Command::Learn),
        Some(Kind::Predict) => parse_predict(frame, model).map(Command::Predict),
        Some(Kind::Status) => fixed(0).map(|_| Command::Status),
        Some(Kind::FactoryReset) => fixed(0).map(|_| Command::FactoryReset),
        Some(Kind::Save) => fixed(0).map(|_| Command::Save),
        Some(Kind::Pull) => {
            fixed(PULL_LEN)?;
            let mut r = Reader(frame.payload);
            let (Some(offset), Some(count)) = (r.u32(), r.u16()) else {
                return Err(length(frame));
            };
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            let Some(left) = model.params.checked_sub(offset) else {
                return Err(nack(Reason::Offset, offset));
            };
            let count = usize::from(count).min(left).min(MAX_WEIGHTS);
            Ok(Command::Pull { offset, count })
        }
        _ => Err(nack(Reason::Type, frame.kind.into())),
    }
}

/// Reads a reply frame (on the host): its type must be a reply's and its
/// payload that type's layout, else the [`Nack`] says why.
pub fn parse_reply<'a>(frame: &Frame<'a>) -> Result<Reply<'a>, Nack> {
    let p = frame.payload;
    let mut r = Reader(p);
    let bad = || length(frame);
    let exact = |len: usize| if p.len() == len { Ok(()) } else { Err(bad()) };
    match Kind::from_byte(frame.kind) {
        Some(Kind::Nack) => {
            exact(NACK_LEN)?;
            let (Some(code), Some(detail)) = (r.u8(), r.u32()) else {
                return Err(bad());
            };
            let reason = Reason::from_code(code).ok_or(nack(Reason::Encoding, code.into()))?;
            Ok(Reply::Nack(Nack { reason, detail }))
        }
        Some(Kind::Ack) => {
            exact(ACK_LEN)?;
            let (Some(class), Some(loss)) = (r.u16(), r.f32()) else {
                return Err(bad());
            };
            Ok(Reply::Ack { class, loss })
        }
        Some(Kind::Prediction) => {
            let class = r.u16().ok_or_else(bad)?;
            let scores = F32s::from_le_bytes(r.0).ok_or_else(bad)?;
            Ok(Reply::Prediction { class, scores })
        }
        Some(Kind::Report) => {
            exact(STATUS_LEN)?;
            let s = (|| {
                Some(Status {
                    version: r.u8()?,
                    capacity: r.u16()?,
                    inputs: r.u32()?,
                    classes: r.u32()?,
                    params: r.u32()?,
                    model_id: r.u64()?,
                    step: r.u64()?,
                    seen: r.u64()?,
                    saves: r.u32()?,
                    last_loss: r.f32()?,
                    stack_peak: r.u32()?,
                })
            })()
            .ok_or_else(bad)?;
            Ok(Reply::Status(s))
        }
        Some(Kind::Weights) => {
            let (Some(offset), Some(total)) = (r.u32(), r.u32()) else {
                return Err(bad());
            };
            let values = F32s::from_le_bytes(r.0).ok_or_else(bad)?;
            Ok(Reply::Weights {
                offset,
                total,
                values,
            })
        }
        _ => Err(nack(Reason::Type, frame.kind.into())),
    }
}

/// Makes retransmitted learn requests idempotent on the device. A host that
/// gets no Ack resends the same frame (same sequence number and bytes); the
/// device checks every good frame with [`Replay::check`] before acting on
/// it and, when it is a retransmission of the learn request it just
/// acknowledged, sends the recorded Ack again instead of learning twice.
/// Only the immediately preceding learn request is remembered: any other
/// frame forgets it, so a host starting a new session (with a Status
/// request, say) cannot be mistaken for a retransmission.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Replay {
    last: Option<(u16, u32, u16, f32)>,
}

impl Replay {
    /// Nothing recorded.
    pub const fn new() -> Replay {
        Replay { last: None }
    }

    /// The Ack to send again when `frame` repeats the last acknowledged
    /// learn request; `None` (and the record forgotten) otherwise.
    pub fn check(&mut self, frame: &Frame<'_>) -> Option<Reply<'static>> {
        match self.last.take() {
            Some((seq, crc, class, loss))
                if frame.kind == Kind::Learn as u8 && frame.seq == seq && frame.crc == crc =>
            {
                self.last = Some((seq, crc, class, loss));
                Some(Reply::Ack { class, loss })
            }
            _ => None,
        }
    }

    /// Records the Ack sent for learn request `frame`.
    pub fn record(&mut self, frame: &Frame<'_>, class: u16, loss: f32) {
        self.last = Some((frame.seq, frame.crc, class, loss));
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::vec;
    use std::vec::Vec;

    const MODEL: LinkModel = LinkModel::new(4, 3, 10);

    /// A decoded frame or error, owned.
    #[derive(Clone, Debug, PartialEq)]
    struct Owned {
        kind: u8,
        seq: u16,
        payload: Vec<u8>,
        crc: u32,
    }

    impl Owned {
        fn frame(&self) -> Frame<'_> {
            Frame {
                kind: self.kind,
                seq: self.seq,
                payload: &self.payload,
                crc: self.crc,
            }
        }
    }

    fn decode_all<const N: usize>(
        dec: &mut Decoder<N>,
        bytes: &[u8],
    ) -> Vec<Result<Owned, LinkError>> {
        let mut v = Vec::new();
        for &b in bytes {
            match dec.push(b) {
                None => {}
                Some(Ok(f)) => v.push(Ok(Owned {
                    kind: f.kind,
                    seq: f.seq,
                    payload: f.payload.to_vec(),
                    crc: f.crc,
                })),
                Some(Err(e)) => v.push(Err(e)),
            }
        }
        v
    }

    fn one(bytes: &[u8]) -> Owned {
        let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();
        let mut v = decode_all(&mut dec, bytes);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(dec.is_idle());
        v.pop().unwrap().unwrap()
    }

    fn raw(kind: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; frame_len(payload.len())];
        let mut w = Writer::raw(kind, seq, &mut out);
        w.bytes(payload);
        assert_eq!(w.finish(), Ok(out.len()));
        out
    }

    fn req(r: &Request<'_>, seq: u16) -> Vec<u8> {
        let mut out = vec![0u8; MAX_FRAME];
        let n = r.encode(seq, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn rep(r: &Reply<'_>, seq: u16) -> Vec<u8> {
        let mut out = vec![0u8; MAX_FRAME];
        let n = r.encode(seq, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn parse(bytes: &[u8], model: &LinkModel) -> Result<(), Nack> {
        parse_request(&one(bytes).frame(), model).map(|_| ())
    }

    fn fix_header(f: &mut [u8]) {
        f[7] = crc8(&f[2..7]);
    }

    fn fix_crc(f: &mut [u8]) {
        let n = f.len();
        let c = crc32(&f[2..n - 4]);
        f[n - 4..].copy_from_slice(&c.to_le_bytes());
    }

    #[test]
    fn link_checksums_and_model_id() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc8(b"123456789"), 0xF4);
        const ID: u64 = model_id(b"foobar");
        assert_eq!(ID, 0x8594_4171_f739_67e8);
        assert_eq!(model_id(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(model_id(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn link_header_check_catches_every_error_of_up_to_three_bits() {
        // CRCs are linear: a flip pattern is caught for every header iff it
        // is caught for one.
        let h = [0x01u8, 0x34, 0x12, 0x10, 0x00];
        let c = crc8(&h);
        let flip = |bits: &[usize]| {
            let mut g = h;
            for &b in bits {
                g[b / 8] ^= 1 << (b % 8);
            }
            g
        };
        let mut patterns = 0;
        for i in 0..40 {
            assert_ne!(crc8(&flip(&[i])), c);
            for j in i + 1..40 {
                assert_ne!(crc8(&flip(&[i, j])), c);
                for k in j + 1..40 {
                    assert_ne!(crc8(&flip(&[i, j, k])), c);
                    patterns += 1;
                }
            }
        }
        assert_eq!(patterns, 9880);
    }

    #[test]
    fn link_frame_layout() {
        let f = req(
            &Request::Learn {
                x: Input::U8(&[9, 8, 7, 6]),
                label: 2,
            },
            0x0102,
        );
        assert_eq!(f.len(), frame_len(3 + 4));
        assert_eq!(
            &f[..8],
            &[0xFD, 0x4C, 0x01, 0x02, 0x01, 7, 0, crc8(&f[2..7])]
        );
        assert_eq!(&f[8..15], &[0, 2, 0, 9, 8, 7, 6]);
        assert_eq!(&f[15..], &crc32(&f[2..15]).to_le_bytes());
        // A reference frame for other implementations: Status, sequence 1
        // (checked against Python's zlib.crc32).
        assert_eq!(
            req(&Request::Status, 1),
            [0xFD, 0x4C, 0x03, 0x01, 0x00, 0x00, 0x00, 0xB0, 0x31, 0x49, 0x57, 0xC1]
        );
        // encode() is Writer with the payload in one piece.
        let mut out = [0u8; 32];
        let n = encode(Kind::Learn, 0x0102, &f[8..15], &mut out).unwrap();
        assert_eq!(&out[..n], &f[..]);
    }

    #[test]
    fn link_every_frame_type_round_trips() {
        let xf = [0.5f32, -1.25, 3.0e-3, 1.0e5];
        let xb = [0u8, 17, 255, 3];
        let inputs = [Input::U8(&xb), Input::F32(F32s::from(&xf[..]))];
        let mut seq = 40_000u16;
        for x in inputs {
            for label in [0u16, 2] {
                seq = seq.wrapping_add(1);
                let f = one(&req(&Request::Learn { x, label }, seq));
                assert_eq!((f.kind, f.seq), (Kind::Learn as u8, seq));
                let Ok(Command::Learn(s)) = parse_request(&f.frame(), &MODEL) else {
                    panic!("learn rejected")
                };
                assert_eq!((s.x().input(), s.label()), (x, label));
                assert_eq!(parse_learn(&f.frame(), &MODEL), Ok(s));
            }
            let f = one(&req(&Request::Predict { x }, 7));
            let Ok(Command::Predict(q)) = parse_request(&f.frame(), &MODEL) else {
                panic!("predict rejected")
            };
            assert_eq!(q.input(), x);
            assert_eq!(q.len(), 4);
        }
        for (r, c) in [
            (Request::Status, Command::Status),
            (Request::FactoryReset, Command::FactoryReset),
            (Request::Save, Command::Save),
            (
                Request::Pull {
                    offset: 3,
                    count: 4,
                },
                Command::Pull {
                    offset: 3,
                    count: 4,
                },
            ),
            // Clamped to the weights left.
            (
                Request::Pull {
                    offset: 8,
                    count: 9,
                },
                Command::Pull {
                    offset: 8,
                    count: 2,
                },
            ),
            (
                Request::Pull {
                    offset: 10,
                    count: 1,
                },
                Command::Pull {
                    offset: 10,
                    count: 0,
                },
            ),
        ] {
            let f = one(&req(&r, 65535));
            assert_eq!(f.seq, 65535);
            assert_eq!(parse_request(&f.frame(), &MODEL), Ok(c));
        }
        let big = LinkModel::new(4, 3, 1 << 20);
        let f = one(&req(
            &Request::Pull {
                offset: 0,
                count: u16::MAX,
            },
            0,
        ));
        assert_eq!(
            parse_request(&f.frame(), &big),
            Ok(Command::Pull {
                offset: 0,
                count: MAX_WEIGHTS
            })
        );

        let scores = [0.1f32, f32::NAN, -2.0];
        let weights: Vec<f32> = (0..MAX_WEIGHTS).map(|i| i as f32 * 0.5 - 3.0).collect();
        let status = Status {
            version: VERSION,
            capacity: 4096,
            inputs: 784,
            classes: 10,
            params: 7850,
            model_id: model_id(b"model"),
            step: u64::MAX - 1,
            seen: 12345,
            saves: 3,
            last_loss: 0.693,
            stack_peak: 2048,
        };
        let mut replies = vec![
            Reply::Ack {
                class: 2,
                loss: 1.5,
            },
            Reply::Prediction {
                class: 1,
                scores: F32s::from(&scores[2..]),
            },
            Reply::Prediction {
                class: 0,
                scores: F32s::from(&[][..]),
            },
            Reply::Status(status),
            Reply::Weights {
                offset: 5,
                total: 7850,
                values: F32s::from(&weights[..3]),
            },
            Reply::Weights {
                offset: 7850,
                total: 7850,
                values: F32s::from(&[][..]),
            },
            Reply::Weights {
                offset: 0,
                total: 7850,
                values: F32s::from(&weights[..]),
            },
        ];
        for c in 1..=12 {
            let reason = Reason::from_code(c).unwrap();
            assert_eq!(reason.code(), c);
            replies.push(Reply::Nack(Nack::new(reason, u32::MAX - u32::from(c))));
        }
        for (i, r) in replies.iter().enumerate() {
            let f = one(&rep(r, i as u16));
            assert_eq!((f.kind, f.seq), (r.kind() as u8, i as u16));
            assert_eq!(parse_reply(&f.frame()).as_ref(), Ok(r));
            assert_eq!(
                parse_request(&f.frame(), &MODEL),
                Err(Nack::new(Reason::Type, f.kind.into()))
            );
        }
        // NaN scores survive bit for bit.
        let f = one(&rep(
            &Reply::Prediction {
                class: 1,
                scores: F32s::from(&scores[..]),
            },
            0,
        ));
        let Ok(Reply::Prediction { scores: s, .. }) = parse_reply(&f.frame()) else {
            panic!()
        };
        assert_eq!(s.get(1).map(f32::to_bits), Some(f32::NAN.to_bits()));
        assert_eq!(s.get(3), None);
        // A full chunk of weights is a full payload.
        assert_eq!(rep(&replies[6], 0).len(), MAX_FRAME);
    }

    #[test]
    fn link_every_rejection_reason() {
        let good = req(
            &Request::Learn {
                x: Input::U8(&[1, 2, 3, 4]),
                label: 1,
            },
            77,
        );
        assert_eq!(parse(&good, &MODEL), Ok(()));
        let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();

        // Crc: the frame's CRC-32 (detail 0) or the header check (detail 1).
        let mut f = good.clone();
        f[9] ^= 0x20;
        let e = decode_all(&mut dec, &f);
        assert_eq!(e, [Err(LinkError::Crc { seq: 77 })]);
        assert_eq!(
            LinkError::Crc { seq: 77 }.nack(),
            Some((77, Nack::new(Reason::Crc, 0)))
        );
        let mut f = good.clone();
        f[5] ^= 0x01;
        let e = decode_all(&mut dec, &f);
        assert_eq!(e, [Err(LinkError::Header { seq: 77 })]);
        assert_eq!(
            e[0].clone().unwrap_err().nack(),
            Some((77, Nack::new(Reason::Crc, 1)))
        );

        // Length: over MAX_PAYLOAD (rejected from the header alone) ...
        let mut f = good.clone();
        f[5..7].copy_from_slice(&(MAX_PAYLOAD as u16 + 1).to_le_bytes());
        fix_header(&mut f);
        let e = decode_all(&mut dec, &f[..8]);
        assert_eq!(e, [Err(LinkError::Length { seq: 77, len: 4097 })]);
        assert_eq!(
            e[0].clone().unwrap_err().nack(),
            Some((77, Nack::new(Reason::Length, 4097)))
        );
        assert!(dec.is_idle());
        // ... over the decoder's capacity: skipped whole, even a frame
        // inside it, and the next frame decodes.
        let inner = req(&Request::Status, 5);
        let outer = raw(
            Kind::Learn as u8,
            6,
            &[&[0u8, 1, 0][..], &inner, &[0; 9]].concat(),
        );
        let mut small: Decoder<16> = Decoder::new();
        let e = decode_all(&mut small, &[&outer[..], &good].concat());
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0], Err(LinkError::Length { seq: 6, len: 24 }));
        assert_eq!(e[1].as_ref().unwrap().seq, 77);
        // ... or not the type's layout.
        let len = |kind: Kind, p: &[u8]| parse(&raw(kind as u8, 1, p), &MODEL);
        fn n<T>(r: Reason, d: u32) -> Result<T, Nack> {
            Err(Nack::new(r, d))
        }
        assert_eq!(len(Kind::Status, &[0]), n(Reason::Length, 1));
        assert_eq!(len(Kind::FactoryReset, &[0, 0]), n(Reason::Length, 2));
        assert_eq!(len(Kind::Pull, &[0; 5]), n(Reason::Length, 5));
        assert_eq!(len(Kind::Pull, &[0; 7]), n(Reason::Length, 7));
        assert_eq!(len(Kind::Learn, &[0, 1]), n(Reason::Length, 2));
        assert_eq!(len(Kind::Predict, &[]), n(Reason::Length, 0));
        assert_eq!(
            len(
                Kind::Learn,
                &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            ),
            n(Reason::Length, 18)
        );
        assert_eq!(len(Kind::Predict, &[1, 0, 0, 0]), n(Reason::Length, 4));

        // Type: unknown, or a reply sent as a request (and the reverse).
        assert_eq!(len(Kind::Ack, &[0; 6]), n(Reason::Type, 0x81));
        assert_eq!(parse(&raw(0x42, 1, &[]), &MODEL), n(Reason::Type, 0x42));
        assert_eq!(parse(&raw(0x00, 1, &[]), &MODEL), n(Reason::Type, 0));
        assert_eq!(parse_reply(&one(&good).frame()), n(Reason::Type, 1));
        assert_eq!(
            parse_learn(&one(&req(&Request::Status, 1)).frame(), &MODEL),
            n(Reason::Type, 3)
        );
        assert_eq!(
            parse_predict(&one(&good).frame(), &MODEL),
            n(Reason::Type, 1)
        );

        // Encoding.
        assert_eq!(
            len(Kind::Learn, &[2, 1, 0, 1, 2, 3, 4]),
            n(Reason::Encoding, 2)
        );
        assert_eq!(
            len(Kind::Predict, &[255, 1, 2, 3, 4]),
            n(Reason::Encoding, 255)
        );

        // Shape.
        let learn = |x: Input<'_>, label| parse(&req(&Request::Learn { x, label }, 1), &MODEL);
        let predict = |x: Input<'_>| parse(&req(&Request::Predict { x }, 1), &MODEL);
        assert_eq!(learn(Input::U8(&[1, 2, 3]), 0), n(Reason::Shape, 3));
        assert_eq!(learn(Input::U8(&[]), 0), n(Reason::Shape, 0));
        assert_eq!(
            learn(Input::F32(F32s::from(&[1.0f32; 5][..])), 0),
            n(Reason::Shape, 5)
        );
        assert_eq!(predict(Input::U8(&[1, 2, 3, 4, 5])), n(Reason::Shape, 5));
        // Four f32 inputs' bytes sent as u8: 16 values.
        assert_eq!(
            len(Kind::Learn, &[&[0u8, 1, 0][..], &[0; 16]].concat()),
            n(Reason::Shape, 16)
        );

        // NonFinite and Range, at the first bad index.
        for (v, r) in [
            (f32::NAN, Reason::NonFinite),
            (f32::INFINITY, Reason::NonFinite),
            (f32::NEG_INFINITY, Reason::NonFinite),
            (2.0e6, Reason::Range),
            (-1.0e38, Reason::Range),
        ] {
            let x = [0.0f32, 1.0, v, v];
            assert_eq!(learn(Input::F32(F32s::from(&x[..])), 0), n(r, 2));
            assert_eq!(predict(Input::F32(F32s::from(&x[..]))), n(r, 2));
        }
        let x = [1.0e6f32, -1.0e6, f32::MIN_POSITIVE, -0.0];
        assert_eq!(learn(Input::F32(F32s::from(&x[..])), 0), Ok(()));
        let tight = LinkModel {
            limit: 1.0,
            ..MODEL
        };
        let f = req(
            &Request::Learn {
                x: Input::F32(F32s::from(&x[..])),
                label: 0,
            },
            1,
        );
        assert_eq!(parse(&f, &tight), n(Reason::Range, 0));
        let loose = LinkModel {
            limit: f32::NAN,
            ..MODEL
        };
        assert_eq!(parse(&f, &loose), Ok(()));
        let nan = [f32::NAN; 4];
        let f = req(
            &Request::Learn {
                x: Input::F32(F32s::from(&nan[..])),
                label: 0,
            },
            1,
        );
        assert_eq!(parse(&f, &loose), n(Reason::NonFinite, 0));

        // Label.
        assert_eq!(learn(Input::U8(&[1, 2, 3, 4]), 3), n(Reason::Label, 3));
        assert_eq!(
            learn(Input::U8(&[1, 2, 3, 4]), u16::MAX),
            n(Reason::Label, 65535)
        );

        // Offset.
        let pull = |offset| parse(&req(&Request::Pull { offset, count: 1 }, 1), &MODEL);
        assert_eq!(pull(11), n(Reason::Offset, 11));
        assert_eq!(pull(u32::MAX), n(Reason::Offset, u32::MAX));
        assert_eq!(pull(10), Ok(()));

        // Replies the host cannot read.
        let reply =
            |kind: Kind, p: &[u8]| parse_reply(&one(&raw(kind as u8, 1, p)).frame()).map(|_| ());
        assert_eq!(reply(Kind::Nack, &[0, 0, 0, 0, 0]), n(Reason::Encoding, 0));
        assert_eq!(
            reply(Kind::Nack, &[13, 0, 0, 0, 0]),
            n(Reason::Encoding, 13)
        );
        assert_eq!(reply(Kind::Nack, &[1, 0, 0, 0]), n(Reason::Length, 4));
        assert_eq!(reply(Kind::Ack, &[0; 7]), n(Reason::Length, 7));
        assert_eq!(reply(Kind::Prediction, &[0; 5]), n(Reason::Length, 5));
        assert_eq!(reply(Kind::Prediction, &[0]), n(Reason::Length, 1));
        assert_eq!(
            reply(Kind::Report, &[0; STATUS_LEN - 1]),
            n(Reason::Length, STATUS_LEN as u32 - 1)
        );
        assert_eq!(reply(Kind::Weights, &[0; 7]), n(Reason::Length, 7));
        assert_eq!(reply(Kind::Weights, &[0; 10]), n(Reason::Length, 10));

        // Every code maps back; no other byte is a reason.
        for c in 0..=255u8 {
            match Reason::from_code(c) {
                Some(r) => assert!((1..=12).contains(&c) && r.code() == c && !r.name().is_empty()),
                None => assert!(c == 0 || c > 12),
            }
        }
    }

    #[test]
    fn link_resynchronises_after_garbage() {
        let frames: Vec<Vec<u8>> = (0..6u16)
            .map(|i| {
                req(
                    &Request::Learn {
                        x: Input::U8(&[i as u8; 4]),
                        label: i % 3,
                    },
                    100 + i,
                )
            })
            .collect();
        let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();
        let seqs = |v: &[Result<Owned, LinkError>]| -> Vec<Result<u16, LinkError>> {
            v.iter()
                .map(|r| r.as_ref().map(|f| f.seq).map_err(|e| *e))
                .collect()
        };
        // Garbage without a magic, a lone first magic byte, a doubled one.
        let mut s = Vec::new();
        s.extend_from_slice(&[0x00, 0xFF, 0x4C, 0x13, 0xFD, 0x00, 0x4C]);
        s.extend_from_slice(&frames[0]);
        s.push(0xFD);
        s.extend_from_slice(&frames[1]);
        s.extend_from_slice(&[0xFD, 0xFD, 0xFD]);
        s.extend_from_slice(&frames[2]);
        assert_eq!(seqs(&decode_all(&mut dec, &s)), [Ok(100), Ok(101), Ok(102)]);
        // feed() stops right after each frame (or error).
        let ends = [7 + 19, 7 + 19 + 1 + 19, s.len()];
        let (mut at, mut got) = (0, Vec::new());
        while at < s.len() {
            let (n, r) = dec.feed(&s[at..]);
            assert!(n > 0);
            at += n;
            if let Some(r) = r {
                assert_eq!(at, ends[got.len()]);
                got.push(r.map(|f| f.seq));
            }
        }
        assert_eq!(got, [Ok(100), Ok(101), Ok(102)]);

        // A stray magic pair 0 to 7 bytes before a frame: the bad header is
        // reported, its bytes are re-scanned, and the frame is not lost.
        for k in 0..8 {
            let mut s = vec![0xFD, 0x4C];
            s.extend((0..k).map(|j| 0x30 + j as u8));
            s.extend_from_slice(&frames[3]);
            let got = seqs(&decode_all(&mut dec, &s));
            assert_eq!(got.last(), Some(&Ok(103)), "k = {k}: {got:?}");
            assert!(
                matches!(got[0], Err(LinkError::Header { .. })),
                "k = {k}: {got:?}"
            );
            assert!(dec.is_idle());
        }

        // A truncated frame swallows what follows until its length is
        // reached; reset() (on an idle line) drops it.
        let mut s = frames[4][..10].to_vec();
        s.extend_from_slice(&frames[5]);
        assert_eq!(
            seqs(&decode_all(&mut dec, &s)),
            [Err(LinkError::Crc { seq: 104 })]
        );
        decode_all(&mut dec, &frames[4][..10]);
        assert!(!dec.is_idle());
        dec.reset();
        assert_eq!(seqs(&decode_all(&mut dec, &frames[5])), [Ok(105)]);

        // Without a reset, MAX_FRAME bytes that hold no magic always bring
        // the decoder back to hunting.
        let mut f = frames[0].clone();
        f[5..7].copy_from_slice(&(MAX_PAYLOAD as u16).to_le_bytes());
        fix_header(&mut f);
        decode_all(&mut dec, &f[..8]);
        assert!(!dec.is_idle());
        let e = decode_all(&mut dec, &[0u8; MAX_FRAME]);
        assert_eq!(seqs(&e), [Err(LinkError::Crc { seq: 100 })]);
        assert!(dec.is_idle());
        assert_eq!(seqs(&decode_all(&mut dec, &frames[5])), [Ok(105)]);
    }

    #[test]
    fn link_encoding_never_overruns() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let r = Request::Learn {
            x: Input::F32(F32s::from(&x[..])),
            label: 1,
        };
        let full = req(&r, 9);
        for n in 0..full.len() {
            let mut out = vec![0xAAu8; n];
            assert_eq!(r.encode(9, &mut out), Err(LinkError::BufferTooSmall), "{n}");
            assert_eq!(
                encode(Kind::Status, 9, &[], &mut out).is_ok(),
                n >= OVERHEAD
            );
        }
        let mut out = vec![0u8; full.len() + 3];
        assert_eq!(r.encode(9, &mut out), Ok(full.len()));
        assert_eq!(&out[..full.len()], &full[..]);
        assert_eq!(&out[full.len()..], &[0, 0, 0]);

        let mut out = vec![0u8; MAX_FRAME + 8];
        let p = vec![0x5Au8; MAX_PAYLOAD];
        assert_eq!(encode(Kind::Learn, 1, &p, &mut out), Ok(MAX_FRAME));
        assert_eq!(one(&out[..MAX_FRAME]).payload, p);
        assert_eq!(
            encode(Kind::Learn, 1, &[0; MAX_PAYLOAD + 1], &mut out),
            Err(LinkError::PayloadTooLong)
        );
        let w = vec![0.0f32; MAX_WEIGHTS + 1];
        let r = Reply::Weights {
            offset: 0,
            total: 0,
            values: F32s::from(&w[..]),
        };
        assert_eq!(r.encode(1, &mut out), Err(LinkError::PayloadTooLong));
        let r = Reply::Weights {
            offset: 0,
            total: 0,
            values: F32s::from(&w[1..]),
        };
        assert_eq!(r.encode(1, &mut out), Ok(MAX_FRAME));
        assert_eq!(LinkError::PayloadTooLong.nack(), None);

        // Weights streamed through a Writer equal the slice's encoding.
        let mut a = [0u8; 64];
        let mut w = Writer::new(Kind::Weights, 3, &mut a);
        w.u32(2).u32(10);
        for i in 2..6 {
            w.f32(i as f32);
        }
        let n = w.finish().unwrap();
        let v = [2.0f32, 3.0, 4.0, 5.0];
        let b = rep(
            &Reply::Weights {
                offset: 2,
                total: 10,
                values: F32s::from(&v[..]),
            },
            3,
        );
        assert_eq!(&a[..n], &b[..]);
    }

    #[test]
    fn link_replay_answers_retransmissions_once_learnt() {
        let a = one(&req(
            &Request::Learn {
                x: Input::U8(&[1, 2, 3, 4]),
                label: 1,
            },
            5,
        ));
        let a2 = one(&req(
            &Request::Learn {
                x: Input::U8(&[1, 2, 3, 5]),
                label: 1,
            },
            5,
        ));
        let st = one(&req(&Request::Status, 5));
        let mut r = Replay::new();
        assert_eq!(r.check(&a.frame()), None);
        r.record(&a.frame(), 2, 0.25);
        let ack = Some(Reply::Ack {
            class: 2,
            loss: 0.25,
        });
        assert_eq!(r.check(&a.frame()), ack);
        assert_eq!(r.check(&a.frame()), ack);
        // Same sequence number, other bytes: a new request.
        assert_eq!(r.check(&a2.frame()), None);
        assert_eq!(r.check(&a.frame()), None);
        r.record(&a.frame(), 2, 0.25);
        assert_eq!(r.check(&st.frame()), None);
        assert_eq!(r.check(&a.frame()), None);
    }

    #[test]
    fn link_samples_feed_the_model() {
        let f = one(&req(
            &Request::Learn {
                x: Input::U8(&[0, 16, 255, 1]),
                label: 2,
            },
            1,
        ));
        let s = parse_learn(&f.frame(), &MODEL).unwrap();
        assert_eq!(
            s.to_ring::<4>(),
            Some(ring::Sample {
                x: [0, 16, 255, 1],
                label: 2
            })
        );
        assert_eq!(s.to_ring::<3>(), None);
        let mut out = [9.0f32; 5];
        assert_eq!(s.x().fill(2.0, &mut out), 4);
        assert_eq!(out, [0.0, 8.0, 127.5, 0.5, 9.0]);
        let x = [0.5f32, -1.0, 2.0, 0.0];
        let f = one(&req(
            &Request::Learn {
                x: Input::F32(F32s::from(&x[..])),
                label: 0,
            },
            1,
        ));
        let s = parse_learn(&f.frame(), &MODEL).unwrap();
        assert_eq!(s.to_ring::<4>(), None);
        let mut out = [0.0f32; 3];
        assert_eq!(s.x().fill(2.0, &mut out), 3);
        assert_eq!(out, [0.5, -1.0, 2.0]);
        let wide = LinkModel::new(4, 300, 1);
        let f = one(&req(
            &Request::Learn {
                x: Input::U8(&[1, 2, 3, 4]),
                label: 299,
            },
            1,
        ));
        assert_eq!(parse_learn(&f.frame(), &wide).unwrap().to_ring::<4>(), None);
    }

    // ---- fuzzing ----

    const FUZZ_FRAMES: usize = 500_000;

    #[derive(Default, Debug)]
    struct Stats {
        frames: usize,
        bytes: usize,
        decoded: usize,
        header: usize,
        length: usize,
        crc: usize,
        accepted: [usize; 5],
        rejected: [usize; 13],
        replies: usize,
        panics: usize,
    }

    fn random_input<'a>(
        rng: &mut Rng,
        n: usize,
        bytes: &'a mut Vec<u8>,
        floats: &'a mut Vec<f32>,
    ) -> Input<'a> {
        if rng.below(2) == 0 {
            *bytes = (0..n).map(|_| rng.below(256) as u8).collect();
            Input::U8(bytes)
        } else {
            *floats = (0..n).map(|_| rng.normal() as f32).collect();
            Input::F32(F32s::from(&floats[..]))
        }
    }

    /// A random valid request (Learn half the time).
    fn valid_request(rng: &mut Rng, m: &LinkModel) -> Vec<u8> {
        let (mut b, mut f) = (Vec::new(), Vec::new());
        let seq = rng.below(65536) as u16;
        let r = match rng.below(10) {
            0..=4 => Request::Learn {
                x: random_input(rng, m.inputs, &mut b, &mut f),
                label: rng.below(m.classes) as u16,
            },
            5 | 6 => Request::Predict {
                x: random_input(rng, m.inputs, &mut b, &mut f),
            },
            7 => Request::Pull {
                offset: rng.below(m.params + 1) as u32,
                count: rng.below(2000) as u16,
            },
            8 => Request::Status,
            _ => Request::FactoryReset,
        };
        req(&r, seq)
    }

    fn valid_reply(rng: &mut Rng) -> Vec<u8> {
        let v: Vec<f32> = (0..rng.below(40)).map(|_| rng.normal() as f32).collect();
        let r = match rng.below(5) {
            0 => Reply::Ack {
                class: rng.below(10) as u16,
                loss: rng.uniform() as f32,
            },
            1 => Reply::Nack(Nack::new(
                Reason::from_code(1 + rng.below(12) as u8).unwrap(),
                rng.next_u64() as u32,
            )),
            2 => Reply::Prediction {
                class: 1,
                scores: F32s::from(&v[..]),
            },
            3 => Reply::Status(Status {
                version: VERSION,
                capacity: 4096,
                inputs: 16,
                classes: 10,
                params: 300,
                model_id: rng.next_u64(),
                step: rng.next_u64(),
                seen: rng.next_u64(),
                saves: 0,
                last_loss: f32::NAN,
                stack_peak: 0,
            }),
            _ => Reply::Weights {
                offset: 0,
                total: 300,
                values: F32s::from(&v[..]),
            },
        };
        rep(&r, rng.below(65536) as u16)
    }

    /// A request whose framing is valid and whose content is not: learn or
    /// predict with non-finite or huge values, labels out of range, wrong
    /// shape, unknown encoding; pulls past the last weight.
    fn poisoned_request(rng: &mut Rng, m: &LinkModel) -> Vec<u8> {
        if rng.below(8) == 0 {
            let offset = (m.params + 1 + rng.below(1 << 20)) as u32;
            let offset = if rng.below(4) == 0 {
                u32::MAX - rng.below(4) as u32
            } else {
                offset
            };
            let count = rng.below(65536) as u16;
            return req(&Request::Pull { offset, count }, rng.below(65536) as u16);
        }
        let mut kind = if rng.below(3) == 0 {
            Kind::Predict
        } else {
            Kind::Learn
        };
        let mut n = m.inputs;
        let mut tag = 1u8;
        let mut label = rng.below(m.classes) as u16;
        let mut x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        match rng.below(6) {
            0 | 1 => {
                let bad = [
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    -f32::NAN,
                    f32::from_bits(0x7F80_0001),
                ];
                x[rng.below(n)] = bad[rng.below(bad.len())];
            }
            2 => {
                let huge = (m.limit as f64 * (1.001 + 1e3 * rng.uniform())).min(3.0e38) as f32;
                x[rng.below(n)] = if rng.below(2) == 0 { huge } else { -huge };
                if rng.below(4) == 0 {
                    x[rng.below(n)] = f32::MAX;
                }
            }
            3 => {
                kind = Kind::Learn;
                label = (m.classes + rng.below(65536 - m.classes)) as u16;
            }
            4 => {
                while n == m.inputs {
                    n = rng.below(3 * m.inputs);
                }
                tag = rng.below(2) as u8;
                x = vec![0.5; n];
            }
            _ => tag = 2 + rng.below(254) as u8,
        }
        let mut p = vec![tag];
        if kind == Kind::Learn {
            p.extend_from_slice(&label.to_le_bytes());
        }
        for v in &x {
            if tag == 0 {
                p.push(*v as u8);
            } else {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        if tag == 1 && rng.below(8) == 0 {
            p.push(0); // a stray byte: a length error
        }
        p.truncate(MAX_PAYLOAD);
        raw(kind as u8, rng.below(65536) as u16, &p)
    }

    fn mutated_frame(rng: &mut Rng, m: &LinkModel) -> Vec<u8> {
        let mut f = if rng.below(4) == 0 {
            valid_reply(rng)
        } else {
            valid_request(rng, m)
        };
        match rng.below(8) {
            // Bit flips.
            0 | 1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(f.len());
                    f[i] ^= 1 << rng.below(8);
                }
            }
            // Truncation.
            2 => f.truncate(rng.below(f.len())),
            // Insertion, sometimes of magic bytes.
            3 => {
                for _ in 0..1 + rng.below(16) {
                    let b = match rng.below(3) {
                        0 => MAGIC[0],
                        1 => MAGIC[1],
                        _ => rng.below(256) as u8,
                    };
                    f.insert(rng.below(f.len() + 1), b);
                }
            }
            // Deletion.
            4 => {
                for _ in 0..1 + rng.below(4) {
                    if !f.is_empty() {
                        f.remove(rng.below(f.len()));
                    }
                }
            }
            // The length field, with a header check that passes most times
            // (so lengths over the limit and mismatched lengths are seen).
            5 => {
                let len = match rng.below(4) {
                    0 => rng.below(65536) as u16,
                    1 => (MAX_PAYLOAD + 1 + rng.below(65536 - MAX_PAYLOAD - 1)) as u16,
                    2 => rng.below(MAX_PAYLOAD + 1) as u16,
                    _ => {
                        let l = u16::from_le_bytes([f[5], f[6]]);
                        l.wrapping_add(rng.below(9) as u16).wrapping_sub(4)
                    }
                };
                f[5..7].copy_from_slice(&len.to_le_bytes());
                if rng.below(4) != 0 {
                    fix_header(&mut f);
                }
            }
            // Another type, re-checksummed.
            6 => {
                f[2] = rng.below(256) as u8;
                fix_header(&mut f);
                fix_crc(&mut f);
            }
            // A random payload under a valid frame of a random type.
            _ => {
                let kind = [1u8, 2, 3, 4, 5, 0x80, 0x81, 0x82, 0x83, 0x84, 0, 0xFF][rng.below(12)];
                let p: Vec<u8> = (0..rng.below(80)).map(|_| rng.below(256) as u8).collect();
                f = raw(kind, rng.below(65536) as u16, &p);
            }
        }
        f
    }

    fn garbage(rng: &mut Rng) -> Vec<u8> {
        (0..rng.below(128))
            .map(|_| match rng.below(16) {
                0 => MAGIC[0],
                1 => MAGIC[1],
                _ => rng.below(256) as u8,
            })
            .collect()
    }

    fn check_frame(f: &Frame<'_>, m: &LinkModel, st: &mut Stats) {
        st.decoded += 1;
        if parse_reply(f).is_ok() {
            st.replies += 1;
        }
        match parse_request(f, m) {
            Err(n) => st.rejected[n.reason.code() as usize] += 1,
            Ok(c) => {
                let k = match c {
                    Command::Learn(s) => {
                        assert!(usize::from(s.label()) < m.classes);
                        check_query(&s.x(), m);
                        assert_eq!(parse_learn(f, m), Ok(s));
                        0
                    }
                    Command::Predict(q) => {
                        check_query(&q, m);
                        1
                    }
                    Command::Status => 2,
                    Command::Pull { offset, count } => {
                        assert!(offset + count <= m.params && count <= MAX_WEIGHTS);
                        3
                    }
                    Command::FactoryReset | Command::Save => 4,
                };
                st.accepted[k] += 1;
            }
        }
    }

    fn check_query(q: &Query<'_>, m: &LinkModel) {
        assert_eq!(q.len(), m.inputs);
        let mut x = vec![f32::NAN; m.inputs];
        assert_eq!(q.fill(255.0, &mut x), m.inputs);
        for v in x {
            assert!(v.is_finite() && v.abs() <= m.limit, "{v}");
        }
    }

    fn feed<const N: usize>(dec: &mut Decoder<N>, bytes: &[u8], m: &LinkModel, st: &mut Stats) {
        for &b in bytes {
            match dec.push(b) {
                None => {}
                Some(Ok(f)) => {
                    assert!(f.payload.len() <= Decoder::<N>::CAPACITY);
                    check_frame(&f, m, st)
                }
                Some(Err(LinkError::Header { .. })) => st.header += 1,
                Some(Err(LinkError::Length { len, .. })) => {
                    assert!(usize::from(len) > Decoder::<N>::CAPACITY);
                    st.length += 1
                }
                Some(Err(LinkError::Crc { .. })) => st.crc += 1,
                Some(Err(e)) => panic!("decoder returned an encoding error {e:?}"),
            }
        }
    }

    #[test]
    fn link_fuzz_decoder_and_validators() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let t0 = std::time::Instant::now();
        let m = LinkModel::new(16, 10, 300);
        let mut rng = Rng::new(0x11AC_F00D);
        // One long-lived decoder sees everything back to back, as a UART
        // would; a small one (64-byte payloads) also skips oversized frames.
        let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();
        let mut small: Decoder<64> = Decoder::new();
        let (mut st, mut st_small) = (Stats::default(), Stats::default());
        // A third decoder is reset before each frame, to judge frames one
        // by one: a valid request is accepted, a poisoned one rejected by
        // the checks after decoding.
        let mut iso: Decoder<MAX_PAYLOAD> = Decoder::new();
        let mut st_iso = Stats::default();
        for _ in 0..FUZZ_FRAMES {
            let (bytes, expect) = match rng.below(10) {
                0 | 1 => (valid_request(&mut rng, &m), Some(true)),
                2 | 3 => (poisoned_request(&mut rng, &m), Some(false)),
                4 => (garbage(&mut rng), None),
                _ => (mutated_frame(&mut rng, &m), None),
            };
            st.frames += 1;
            st.bytes += bytes.len();
            let r = catch_unwind(AssertUnwindSafe(|| {
                feed(&mut dec, &bytes, &m, &mut st);
                feed(&mut small, &bytes, &m, &mut st_small);
                iso.reset();
                let before = (st_iso.decoded, st_iso.accepted.iter().sum::<usize>());
                feed(&mut iso, &bytes, &m, &mut st_iso);
                if let Some(ok) = expect {
                    assert_eq!(st_iso.decoded, before.0 + 1);
                    assert_eq!(
                        st_iso.accepted.iter().sum::<usize>(),
                        before.1 + usize::from(ok)
                    );
                }
            }));
            if r.is_err() {
                st.panics += 1;
            }
        }
        // Whatever state the stream left, a frame after MAX_FRAME zeros
        // decodes.
        let ok = req(&Request::Status, 1);
        let mut tail = vec![0u8; MAX_FRAME];
        tail.extend_from_slice(&ok);
        let got = decode_all(&mut dec, &tail);
        assert_eq!(
            got.last().map(|r| r.as_ref().map(|f| f.seq).ok()),
            Some(Some(1))
        );
        let elapsed = t0.elapsed();

        std::println!(
            "link fuzz: {} frames ({} bytes) in {:.2} s, {} panics",
            st.frames,
            st.bytes,
            elapsed.as_secs_f64(),
            st.panics
        );
        for (name, s) in [
            ("stream, 4096-byte decoder", &st),
            ("stream, 64-byte decoder", &st_small),
            ("frame by frame (reset before each)", &st_iso),
        ] {
            std::println!(
                "  {name}: {} frames decoded ({} read as replies); dropped by the decoder: header {}, length {}, crc {}",
                s.decoded, s.replies, s.header, s.length, s.crc
            );
            std::println!(
                "    accepted: learn {}, predict {}, status {}, pull {}, factory-reset {}",
                s.accepted[0],
                s.accepted[1],
                s.accepted[2],
                s.accepted[3],
                s.accepted[4]
            );
            let mut line = std::string::String::from("    rejected:");
            for c in 1..=12u8 {
                let n = s.rejected[c as usize];
                if n > 0 {
                    line += &std::format!(" {} {n},", Reason::from_code(c).unwrap().name());
                }
            }
            std::println!("{}", line.trim_end_matches(','));
        }
        assert_eq!(st.panics, 0);
        assert!(st.frames >= 100_000);
        assert!(st.accepted.iter().all(|&n| n > 100), "{:?}", st.accepted);
        assert!(st.header > 0 && st.length > 0 && st.crc > 0);
        for r in [
            Reason::Length,
            Reason::Type,
            Reason::Encoding,
            Reason::Shape,
            Reason::NonFinite,
            Reason::Range,
            Reason::Label,
            Reason::Offset,
        ] {
            assert!(
                st.rejected[r.code() as usize] > 100,
                "{}: {:?}",
                r.name(),
                st.rejected
            );
        }
        assert!(st_small.length > 0);
    }
}
