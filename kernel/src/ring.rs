//! Fixed-capacity containers for on-device fine-tuning, on `heapless`:
//! a ring of the most recent samples (oldest dropped when full) and a
//! history of recent losses.

use heapless::{Deque, HistoryBuf};

use crate::real::Real;

/// One stored sample: `D` raw input values (e.g. 8-bit pixels) and a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sample<const D: usize> {
    /// Raw input values.
    pub x: [u8; D],
    /// Class label.
    pub label: u8,
}

/// The `N` most recent samples of `D` bytes: `N·(D + 1)` bytes of RAM plus
/// two indices.
#[derive(Default)]
pub struct SampleRing<const N: usize, const D: usize> {
    buf: Deque<Sample<D>, N>,
}

impl<const N: usize, const D: usize> SampleRing<N, D> {
    /// An empty ring.
    pub const fn new() -> Self {
        SampleRing { buf: Deque::new() }
    }

    /// Stores a sample, dropping the oldest when the ring is full.
    pub fn push(&mut self, s: Sample<D>) {
        if self.buf.is_full() {
            self.buf.pop_front();
        }
        // Cannot fail: there is room after the pop above.
        let _ = self.buf.push_back(s);
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<&Sample<D>> {
        self.buf.back()
    }

    /// Copies the `k` most recent samples (oldest first) into a batch:
    /// inputs divided by `pixel_max` into `x` (k·D values, see
    /// [`pixels_into`]) and labels into `y`. Returns the number of samples
    /// copied (≤ k, ≤ len).
    pub fn fill_batch<F: Real>(&self, k: usize, pixel_max: F, x: &mut [F], y: &mut [u32]) -> usize {
        let k = k.min(self.buf.len()).min(y.len()).min(x.len() / D.max(1));
        let skip = self.buf.len() - k;
        for (i, s) in self.buf.iter().skip(skip).enumerate() {
            pixels_into(&s.x, pixel_max, &mut x[i * D..(i + 1) * D]);
            y[i] = s.label as u32;
        }
        k
    }
}

/// A sample's inputs as the model sees them: x = raw / `pixel_max` (16
/// for the UCI digits' 0..=16, 255 for 8-bit images), exactly as the host
/// scales a data set's pixels, so both sides compute the same bits. Fills
/// `min(raw.len(), out.len())` values.
pub fn pixels_into<F: Real>(raw: &[u8], pixel_max: F, out: &mut [F]) {
    for (dst, &v) in out.iter_mut().zip(raw) {
        *dst = F::from_usize(v as usize) / pixel_max;
    }
}

/// The last `N` losses and their running mean.
pub struct LossHistory<F: Copy, const N: usize> {
    buf: HistoryBuf<F, N>,
}

impl<F: Real, const N: usize> Default for LossHistory<F, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Real, const N: usize> LossHistory<F, N> {
    /// An empty history.
    pub const fn new() -> Self {
        LossHistory {
            buf: HistoryBuf::new(),
        }
    }

    /// Records a loss.
    pub fn push(&mut self, loss: F) {
        self.buf.write(loss);
    }

    /// Mean of the recorded losses (None when empty).
    pub fn mean(&self) -> Option<F> {
        if self.buf.is_empty() {
            return None;
        }
        let mut s = F::ZERO;
        for &v in self.buf.as_slice() {
            s += v;
        }
        Some(s / F::from_usize(self.buf.len()))
    }

    /// Number of losses held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_drops_oldest() {
        let mut r: SampleRing<3, 2> = SampleRing::new();
        for i in 0..5u8 {
            r.push(Sample {
                x: [i, i + 1],
                label: i,
            });
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.latest().map(|s| s.label), Some(4));
        let mut x = [0.0f32; 4];
        let mut y = [0u32; 2];
        assert_eq!(r.fill_batch(2, 2.0, &mut x, &mut y), 2);
        assert_eq!(y, [3, 4]);
        assert_eq!(x, [1.5, 2.0, 2.0, 2.5]);
    }

    #[test]
    fn history_mean() {
        let mut h: LossHistory<f32, 2> = LossHistory::new();
        assert_eq!(h.mean(), None);
        h.push(1.0);
        h.push(2.0);
        h.push(4.0);
        assert_eq!(h.mean(), Some(3.0));
    }
}
