//! The messages: [`Request`]s and [`Reply`]s with their payloads
//! ([`Input`], [`F32s`], [`Status`]), the [`LinkModel`] they are checked
//! against, and the checked [`Sample`] and [`Query`] values.

use super::*;

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
    pub(super) x: Input<'a>,
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
    pub(super) x: Query<'a>,
    pub(super) label: u16,
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
