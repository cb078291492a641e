//! The frame codec: the [`Frame`] a [`Decoder`] yields byte by byte, the
//! [`Writer`] and [`encode`] that build one, and the CRC-8 header check.

use super::*;

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

/// CRC-8 (poly 0x07, init 0, no reflection: CRC-8/SMBUS), the header check.
pub(super) fn crc8(bytes: &[u8]) -> u8 {
    let mut c = 0u8;
    for &b in bytes {
        c ^= b;
        for _ in 0..8 {
            c = (c << 1) ^ (0x07 & (c >> 7).wrapping_neg());
        }
    }
    c
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

    pub(super) fn raw(kind: u8, seq: u16, out: &'o mut [u8]) -> Writer<'o> {
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
