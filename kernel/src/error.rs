//! Errors are values: no valid call into the kernel panics.

use core::fmt;

/// Why a kernel call did not complete. On any error, the parameters (and the
/// optimizer's momentum) are exactly as they were before the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The loss or the step direction contains NaN or ±∞; the step was rejected.
    NonFinite,
    /// A buffer's length does not match what the model shape requires.
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// Length required.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A class label is not below the number of outputs.
    LabelOutOfRange {
        /// The label.
        label: u32,
        /// Number of classes (model outputs).
        classes: u32,
    },
    /// The model shape is invalid (no layers, more than `MAX_LAYERS`, a zero width).
    BadShape,
    /// A layer list does not describe a valid model (the reason).
    BadModel(&'static str),
    /// A hyper-parameter is out of range (e.g. ε = 0, a negative ρ, NaN).
    InvalidConfig(&'static str),
    /// The method needs a scratch buffer that was not supplied.
    MissingBuffer(&'static str),
    /// No mini-batch was set on the objective before a gradient was asked for.
    NoBatch,
    /// The objective does not implement this operation.
    Unsupported(&'static str),
    /// Another process of a data-parallel job failed in the same
    /// collective operation (see [`crate::dist`]).
    Peer,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NonFinite => write!(f, "non-finite loss or gradient; step rejected"),
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected length {expected}, got {got}"),
            Error::LabelOutOfRange { label, classes } => {
                write!(
                    f,
                    "label {label} out of range (model has {classes} outputs)"
                )
            }
            Error::BadShape => write!(f, "invalid model shape"),
            Error::BadModel(s) => write!(f, "invalid model: {s}"),
            Error::InvalidConfig(s) => write!(f, "invalid configuration: {s}"),
            Error::MissingBuffer(s) => write!(f, "missing scratch buffer: {s}"),
            Error::NoBatch => write!(f, "no mini-batch set"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::Peer => write!(f, "another process of the data-parallel job failed"),
        }
    }
}

impl core::error::Error for Error {}

/// Returns `Err(ShapeMismatch)` unless `got == expected`.
#[inline]
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}
