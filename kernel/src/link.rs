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

mod codec;
mod message;
mod parse;

pub use codec::*;
pub use message::*;
pub use parse::*;

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
mod tests;
