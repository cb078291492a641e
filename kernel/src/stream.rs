//! The sample stream `fdgr samples` writes and the firmware fine-tunes on:
//! the one definition of the format, for its writer and its readers.
//!
//! A stream is samples back to back, with no header. A sample of `D`
//! inputs is [`record_len`]`(D)` = D + 1 bytes: its D input values as
//! bytes (e.g. pixels 0..=255, as stored in the data set), then its class
//! label as one byte. So n samples are n·(D + 1) bytes, and sample i starts
//! at byte i·(D + 1).

use core::fmt;

use crate::ring::Sample;

/// Bytes per sample with `inputs` input values: the inputs, then the label.
pub const fn record_len(inputs: usize) -> usize {
    inputs + 1
}

/// Why a stream or a sample was rejected.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StreamError {
    /// The stream is empty or ends inside a sample.
    Length {
        /// Bytes in the stream.
        bytes: usize,
        /// Bytes per sample.
        record: usize,
    },
    /// An input value is not an integer in 0..=255.
    NotAByte(f32),
    /// A label above 255.
    LabelTooLarge(u32),
    /// The output buffer is smaller than [`record_len`] of the sample.
    BufferTooSmall,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Length { bytes, record } => {
                write!(f, "{bytes} bytes, not a positive multiple of {record}")
            }
            StreamError::NotAByte(v) => write!(f, "value {v} is not a byte"),
            StreamError::LabelTooLarge(y) => write!(f, "label {y} does not fit a byte"),
            StreamError::BufferTooSmall => write!(f, "output buffer too small"),
        }
    }
}

/// The number of samples in a stream of samples with `inputs` input
/// values; an empty stream, or one that ends inside a sample, is rejected.
pub fn count(stream: &[u8], inputs: usize) -> Result<usize, StreamError> {
    let record = record_len(inputs);
    if stream.is_empty() || stream.len() % record != 0 {
        return Err(StreamError::Length {
            bytes: stream.len(),
            record,
        });
    }
    Ok(stream.len() / record)
}

/// Sample `i` of a stream of `D`-input samples, if the stream holds all
/// of it.
pub fn sample<const D: usize>(stream: &[u8], i: usize) -> Option<Sample<D>> {
    let record = record_len(D);
    let start = i.checked_mul(record)?;
    let b = stream.get(start..start.checked_add(record)?)?;
    let mut x = [0u8; D];
    x.copy_from_slice(&b[..D]);
    Some(Sample { x, label: b[D] })
}

/// Writes one sample, the inputs `x` (each an integer 0..=255) as bytes
/// and then `label`, to the start of `out`; returns the bytes written,
/// [`record_len`]`(x.len())`. On an error nothing is written.
pub fn write_sample(x: &[f32], label: u32, out: &mut [u8]) -> Result<usize, StreamError> {
    let record = record_len(x.len());
    if out.len() < record {
        return Err(StreamError::BufferTooSmall);
    }
    if let Some(&v) = x
        .iter()
        .find(|&&v| !(0.0..=255.0).contains(&v) || (v as u8) as f32 != v)
    {
        return Err(StreamError::NotAByte(v));
    }
    let label = u8::try_from(label).map_err(|_| StreamError::LabelTooLarge(label))?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v as u8;
    }
    out[x.len()] = label;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_samples_read_back() {
        let mut stream = [0u8; 4 * 4];
        let samples: [([f32; 3], u32); 4] = [
            ([0.0, 16.0, 255.0], 9),
            ([1.0, 2.0, 3.0], 0),
            ([-0.0, 7.0, 128.0], 255),
            ([4.0, 5.0, 6.0], 1),
        ];
        let mut n = 0;
        for (x, y) in &samples {
            n += write_sample(x, *y, &mut stream[n..]).unwrap();
        }
        assert_eq!(n, stream.len());
        assert_eq!(&stream[..4], &[0, 16, 255, 9]);
        assert_eq!(count(&stream, 3), Ok(4));
        for (i, (x, y)) in samples.iter().enumerate() {
            let s: Sample<3> = sample(&stream, i).unwrap();
            assert_eq!(s.label as u32, *y);
            for (a, b) in s.x.iter().zip(x) {
                assert_eq!(*a as f32, *b);
            }
        }
        assert_eq!(sample::<3>(&stream, 4), None);
        assert_eq!(sample::<3>(&stream, usize::MAX), None);
    }

    #[test]
    fn bad_samples_and_streams_are_rejected() {
        let mut out = [7u8; 4];
        for v in [0.5, -1.0, 256.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                write_sample(&[1.0, v, 2.0], 0, &mut out),
                Err(StreamError::NotAByte(_))
            ));
        }
        assert_eq!(
            write_sample(&[1.0, 2.0, 3.0], 256, &mut out),
            Err(StreamError::LabelTooLarge(256))
        );
        assert_eq!(
            write_sample(&[1.0, 2.0, 3.0], 0, &mut out[..3]),
            Err(StreamError::BufferTooSmall)
        );
        assert_eq!(out, [7; 4], "nothing written on an error");
        assert!(count(&[], 3).is_err());
        assert!(count(&[0; 7], 3).is_err());
        assert_eq!(count(&[0; 8], 3), Ok(2));
    }
}
