//! Data augmentation for image batches: the standard CIFAR recipe, a random
//! crop after zero padding and a random horizontal flip (torchvision's
//! `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`).
//!
//! Batches are flat NCHW rows as in [`crate::data::Dataset`]: each sample
//! is `C·H·W` values, its C planes one after the other, each plane H rows
//! of W values. The transform works in place, plane by plane, without any
//! scratch memory, so it allocates nothing.
//!
//! # Randomness
//!
//! Every sample, in batch order, takes exactly three draws from the
//! generator ([`fdgr_kernel::Rng`], SplitMix64): the crop's top offset
//! `rng.below(2·pad + 1)`, its left offset `rng.below(2·pad + 1)`, and the
//! flip `rng.below(2) == 1`. The result is a function of the input and the
//! generator's state, so a run resumed from a checkpoint that stores that
//! state (one `u64`) reproduces the augmentation exactly.
//!
//! # What the padding holds
//!
//! The padded border takes a fill value *in the space of the values
//! given*, which are normalised inputs: by default 0. Under `--normalize
//! auto` (pixels / 255) that is a black pixel, exactly torchvision's
//! zero padding of the raw image before `ToTensor`. Under `--normalize
//! channel` 0 is the training set's mean colour, whereas torchvision pads
//! the raw image with black before `Normalize(mean, std)`, which then
//! reads −mean/std; pass those values (the data notes print mean and std)
//! with [`CropFlip::with_fill`] to reproduce that exactly.

use fdgr_kernel::Rng;

/// One sample's transform: take the `H×W` window at (`top`, `left`) of the
/// image padded by `pad` on every side, then mirror it left–right when
/// `flip`. `top` and `left` are in `0..=2·pad`; (`pad`, `pad`) without flip
/// is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// Row of the window's first row in the padded image.
    pub top: usize,
    /// Column of the window's first column in the padded image.
    pub left: usize,
    /// Mirror the window horizontally.
    pub flip: bool,
}

impl Crop {
    /// The transform that changes nothing.
    pub fn identity(pad: usize) -> Crop {
        Crop {
            top: pad,
            left: pad,
            flip: false,
        }
    }

    /// A random transform: three draws, top, left, flip (see the module
    /// documentation).
    pub fn draw(pad: usize, rng: &mut Rng) -> Crop {
        let top = rng.below(2 * pad + 1);
        let left = rng.below(2 * pad + 1);
        let flip = rng.below(2) == 1;
        Crop { top, left, flip }
    }
}

/// Random crop after padding, and random horizontal flip, for batches of
/// one image shape.
#[derive(Clone, Debug)]
pub struct CropFlip {
    dims: (usize, usize, usize),
    pad: usize,
    flip: bool,
    fill: Vec<f32>,
}

impl CropFlip {
    /// Crops after padding each side by `pad` (CIFAR recipes: 4) and flips
    /// half the samples; the padding is 0.
    ///
    /// # Panics
    /// When a dimension of `dims` (C, H, W) is 0.
    pub fn new(dims: (usize, usize, usize), pad: usize) -> CropFlip {
        assert!(
            dims.0 * dims.1 * dims.2 > 0,
            "augment: image shape {dims:?} has a zero dimension"
        );
        CropFlip {
            dims,
            pad,
            flip: true,
            fill: vec![0.0; dims.0],
        }
    }

    /// Sets the padding value of each channel (one value, or one per
    /// channel).
    ///
    /// # Panics
    /// When `fill` has neither 1 nor C values.
    pub fn with_fill(mut self, fill: &[f32]) -> CropFlip {
        match fill.len() {
            1 => self.fill.iter_mut().for_each(|f| *f = fill[0]),
            n if n == self.dims.0 => self.fill.copy_from_slice(fill),
            n => panic!(
                "augment: {n} fill values for {} channels (expected 1 or {})",
                self.dims.0, self.dims.0
            ),
        }
        self
    }

    /// Turns the random flip on or off (the draws stay the same: a sample's
    /// flip draw is then ignored).
    pub fn with_flip(mut self, flip: bool) -> CropFlip {
        self.flip = flip;
        self
    }

    /// The image shape (C, H, W).
    pub fn dims(&self) -> (usize, usize, usize) {
        self.dims
    }

    /// The padding on each side.
    pub fn pad(&self) -> usize {
        self.pad
    }

    /// The padding value of each channel.
    pub fn fill(&self) -> &[f32] {
        &self.fill
    }

    /// Whether samples are flipped (half of them, by their flip draw).
    pub fn flips(&self) -> bool {
        self.flip
    }

    /// Values per sample.
    pub fn features(&self) -> usize {
        self.dims.0 * self.dims.1 * self.dims.2
    }

    /// Draws a transform for each sample of `x` (in order) and applies it in
    /// place.
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `C·H·W`.
    pub fn apply(&self, x: &mut [f32], rng: &mut Rng) {
        let f = self.features();
        assert!(
            x.len() % f == 0,
            "augment: batch of {} values is not a whole number of {}x{}x{} samples",
            x.len(),
            self.dims.0,
            self.dims.1,
            self.dims.2
        );
        for sample in x.chunks_exact_mut(f) {
            let mut c = Crop::draw(self.pad, rng);
            c.flip &= self.flip;
            self.apply_one(sample, c);
        }
    }

    /// Advances `rng` past the draws of `samples` samples, exactly as
    /// [`CropFlip::apply`] on them would (three draws each), without
    /// touching any data: a data-parallel process augments its slice of a
    /// global batch with the draws one process would give those samples.
    pub fn skip(&self, rng: &mut Rng, samples: usize) {
        for _ in 0..samples {
            Crop::draw(self.pad, rng);
        }
    }

    /// Applies one given transform to one sample in place.
    ///
    /// # Panics
    /// When `sample` does not hold `C·H·W` values or `crop` is outside
    /// `0..=2·pad`.
    pub fn apply_one(&self, sample: &mut [f32], crop: Crop) {
        let (_, h, w) = self.dims;
        assert_eq!(sample.len(), self.features(), "augment: sample size");
        assert!(
            crop.top <= 2 * self.pad && crop.left <= 2 * self.pad,
            "augment: crop {crop:?} outside the padding {}",
            self.pad
        );
        let dy = crop.top as isize - self.pad as isize;
        let dx = crop.left as isize - self.pad as isize;
        for (plane, &fill) in sample.chunks_exact_mut(h * w).zip(&self.fill) {
            shift_plane(plane, h, w, dy, dx, crop.flip, fill);
        }
    }
}

/// `out[i][j] = in[i + dy][j + dx]` (or `fill` outside the image), then
/// each row reversed when `flip`; in place. Rows are visited in the order
/// that reads every source row before it is overwritten, and within a row
/// `copy_within` handles the overlap.
fn shift_plane(p: &mut [f32], h: usize, w: usize, dy: isize, dx: isize, flip: bool, fill: f32) {
    // columns j of the output with a source column j + dx inside 0..w
    let j0 = (-dx).clamp(0, w as isize) as usize;
    let j1 = (w as isize - dx).clamp(0, w as isize) as usize;
    let mut row = |i: usize| {
        let out = i * w;
        let s = i as isize + dy;
        if s < 0 || s >= h as isize || j0 >= j1 {
            p[out..out + w].fill(fill);
        } else {
            let src = s as usize * w;
            let (a, b) = ((j0 as isize + dx) as usize, (j1 as isize + dx) as usize);
            p.copy_within(src + a..src + b, out + j0);
            p[out..out + j0].fill(fill);
            p[out + j1..out + w].fill(fill);
        }
        if flip {
            p[out..out + w].reverse();
        }
    };
    if dy > 0 {
        (0..h).for_each(&mut row);
    } else {
        (0..h).rev().for_each(&mut row);
    }
}

/// Random crop after zero padding by `pad`, and random horizontal flip, of
/// every sample of the batch `x` in place; see [`CropFlip`].
///
/// # Panics
/// When `x.len()` is not a multiple of `C·H·W`, or a dimension is 0.
pub fn crop_flip(x: &mut [f32], dims: (usize, usize, usize), pad: usize, rng: &mut Rng) {
    CropFlip::new(dims, pad).apply(x, rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: build the padded image, take the window, mirror it.
    fn reference(
        img: &[f32],
        dims: (usize, usize, usize),
        pad: usize,
        c: Crop,
        fill: &[f32],
    ) -> Vec<f32> {
        let (ch, h, w) = dims;
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut out = vec![];
        for k in 0..ch {
            let mut padded = vec![fill[k]; ph * pw];
            for i in 0..h {
                for j in 0..w {
                    padded[(i + pad) * pw + j + pad] = img[k * h * w + i * w + j];
                }
            }
            for i in 0..h {
                for j in 0..w {
                    let jj = if c.flip { w - 1 - j } else { j };
                    out.push(padded[(i + c.top) * pw + jj + c.left]);
                }
            }
        }
        out
    }

    #[test]
    fn slices_with_skipped_draws_equal_the_whole_batch() {
        let dims = (2, 5, 4);
        let a = CropFlip::new(dims, 2);
        let x = image(dims, 7, 3);
        let mut whole = x.clone();
        let mut r = Rng::new(9);
        a.apply(&mut whole, &mut r);
        let f = a.features();
        for (lo, hi) in [(0, 3), (3, 5), (5, 7)] {
            let mut part = x[lo * f..hi * f].to_vec();
            let mut r2 = Rng::new(9);
            a.skip(&mut r2, lo);
            a.apply(&mut part, &mut r2);
            a.skip(&mut r2, 7 - hi);
            assert_eq!(part, whole[lo * f..hi * f]);
            assert_eq!(r2.state, r.state);
        }
    }

    fn image(dims: (usize, usize, usize), n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n * dims.0 * dims.1 * dims.2)
            .map(|_| 1.0 + r.uniform() as f32)
            .collect()
    }

    #[test]
    fn identity_and_double_flip() {
        let dims = (3, 5, 7);
        let x = image(dims, 2, 1);
        let a = CropFlip::new(dims, 4);
        let mut y = x.clone();
        for s in y.chunks_exact_mut(105) {
            a.apply_one(s, Crop::identity(4));
        }
        assert_eq!(y, x);
        let flip = Crop {
            flip: true,
            ..Crop::identity(4)
        };
        for s in y.chunks_exact_mut(105) {
            a.apply_one(s, flip);
        }
        assert_ne!(y, x);
        assert_eq!(y[0], x[6], "first pixel is the row's last");
        for s in y.chunks_exact_mut(105) {
            a.apply_one(s, flip);
        }
        assert_eq!(y, x);
    }

    #[test]
    fn every_crop_matches_the_padded_reference() {
        // odd and non-square shapes, pads up to beyond the image
        for (dims, pad) in [
            ((3, 6, 5), 2),
            ((1, 4, 4), 4),
            ((2, 3, 8), 5),
            ((1, 1, 1), 1),
        ] {
            let x = image(dims, 1, 7);
            let fill: Vec<f32> = (0..dims.0).map(|k| -(k as f32) - 0.5).collect();
            let a = CropFlip::new(dims, pad).with_fill(&fill);
            for top in 0..=2 * pad {
                for left in 0..=2 * pad {
                    for flip in [false, true] {
                        let c = Crop { top, left, flip };
                        let mut y = x.clone();
                        a.apply_one(&mut y, c);
                        assert_eq!(
                            y,
                            reference(&x, dims, pad, c, &fill),
                            "{dims:?} pad {pad} {c:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn outside_values_come_from_the_padding() {
        let (dims, p) = ((3, 8, 8), 4);
        let x = image(dims, 1, 3); // all values in [1, 2)
        let mut y = x.clone();
        CropFlip::new(dims, p).apply_one(
            &mut y,
            Crop {
                top: 0,
                left: 1,
                flip: false,
            },
        );
        for k in 0..3 {
            for i in 0..8 {
                for j in 0..8 {
                    let v = y[k * 64 + i * 8 + j];
                    if i < p || j < p - 1 {
                        assert_eq!(v, 0.0, "({k},{i},{j}) should be padding");
                    } else {
                        assert_eq!(v, x[k * 64 + (i - p) * 8 + j + 1 - p]);
                    }
                }
            }
        }
        // a one-value fill applies to every channel
        let mut y = x.clone();
        CropFlip::new(dims, p).with_fill(&[-3.0]).apply_one(
            &mut y,
            Crop {
                top: 8,
                left: 8,
                flip: true,
            },
        );
        assert_eq!(y.iter().filter(|&&v| v == -3.0).count(), 3 * (64 - 16));
    }

    #[test]
    fn draws_follow_the_generator() {
        let dims = (3, 6, 6);
        let n = 64;
        let x = image(dims, n, 5);
        let a = CropFlip::new(dims, 2);
        let mut r1 = Rng::new(42);
        let mut y = x.clone();
        a.apply(&mut y, &mut r1);
        // the same, sample by sample, from a copy of the generator
        let mut r2 = Rng::new(42);
        let mut z = x.clone();
        let mut crops = vec![];
        for s in z.chunks_exact_mut(108) {
            let c = Crop::draw(2, &mut r2);
            crops.push(c);
            a.apply_one(s, c);
        }
        assert_eq!(y, z);
        assert_eq!(r1, r2);
        // exactly three draws per sample
        let mut r3 = Rng::new(42);
        (0..3 * n).for_each(|_| {
            r3.next_u64();
        });
        assert_eq!(r1, r3);
        // samples get their own crops
        crops.sort_by_key(|c| (c.top, c.left, c.flip));
        crops.dedup();
        assert!(crops.len() > 10, "{} distinct crops", crops.len());
        // a resumed generator reproduces the next batch; another seed differs
        let (mut a1, mut a2) = (x.clone(), x.clone());
        let mut resumed = Rng { state: r1.state };
        a.apply(&mut a1, &mut r1);
        a.apply(&mut a2, &mut resumed);
        assert_eq!(a1, a2);
        let mut b = x.clone();
        crop_flip(&mut b, dims, 2, &mut Rng::new(43));
        assert_ne!(b, y);
        // flips off: no sample is mirrored, the offsets are the same
        let mut nf = x.clone();
        a.clone().with_flip(false).apply(&mut nf, &mut Rng::new(42));
        let mut r4 = Rng::new(42);
        let mut want = x.clone();
        for s in want.chunks_exact_mut(108) {
            let c = Crop::draw(2, &mut r4);
            a.apply_one(s, Crop { flip: false, ..c });
        }
        assert_eq!(nf, want);
    }

    #[test]
    fn offsets_and_flips_are_uniform() {
        let (pad, n) = (4usize, 90_000usize);
        let k = 2 * pad + 1;
        let mut rng = Rng::new(9);
        let mut top = vec![0usize; k];
        let mut left = vec![0usize; k];
        let mut joint = vec![0usize; k * k * 2];
        let mut flips = 0;
        for _ in 0..n {
            let c = Crop::draw(pad, &mut rng);
            top[c.top] += 1;
            left[c.left] += 1;
            flips += c.flip as usize;
            joint[(c.top * k + c.left) * 2 + c.flip as usize] += 1;
        }
        // each count within 5 standard deviations of its expectation
        let ok = |count: usize, p: f64| {
            let (e, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
            (count as f64 - e).abs() < 5.0 * sd
        };
        for c in top.iter().chain(&left) {
            assert!(ok(*c, 1.0 / k as f64), "{top:?} {left:?}");
        }
        assert!(ok(flips, 0.5), "{flips} flips of {n}");
        for c in &joint {
            assert!(ok(*c, 1.0 / (2 * k * k) as f64), "{joint:?}");
        }
        // and the pixel-level effect: a crop-flipped constant image keeps
        // on average (1 - pad/H)^2 of its pixels (here H = W = 32)
        let dims = (1, 32, 32);
        let mut x = vec![1.0f32; 2000 * 1024];
        crop_flip(&mut x, dims, 4, &mut Rng::new(1));
        let kept = x.iter().sum::<f32>() as f64 / x.len() as f64;
        // E|offset| for offset uniform on -4..=4 is 20/9
        let want = (1.0 - 20.0 / 9.0 / 32.0) * (1.0 - 20.0 / 9.0 / 32.0);
        assert!((kept - want).abs() < 0.005, "{kept} vs {want}");
    }
}
