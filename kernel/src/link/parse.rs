//! The payload checks: [`parse_request`], [`parse_learn`],
//! [`parse_predict`] and [`parse_reply`].

use super::*;

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
