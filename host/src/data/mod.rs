//! Data sets: the two shipped ones (`digits`, `mnist5k`) and user files in
//! standard formats (MNIST IDX, CIFAR-10 and CIFAR-100 binary, as batch
//! files or straight from the distributed `.tar.gz` archives, and CSV with
//! the label last).
//!
//! | `--data` | source | sample shape (C, H, W) | classes |
//! | --- | --- | --- | --- |
//! | `digits` | built in, 1797 samples | 1×8×8 | 10 |
//! | `mnist5k` | built in, 5000 samples | 1×28×28 | 10 |
//! | `mnist:DIR` | `train-images-idx3-ubyte` etc. (raw or `.gz`) | 1×rows×cols from the files | largest label + 1 |
//! | `idx:IMAGES,LABELS` | one IDX pair | 1×rows×cols from the file | largest label + 1 |
//! | `cifar10:DIR` | `data_batch_{1..5}.bin`, `test_batch.bin` | 3×32×32 | 10 |
//! | `cifar10:FILE.tar.gz` | `cifar-10-binary.tar.gz` | 3×32×32 | 10 |
//! | `cifar10:FILE.bin` | one batch | 3×32×32 | 10 |
//! | `cifar100:DIR` | `train.bin`, `test.bin` (fine labels) | 3×32×32 | 100 |
//! | `cifar100:FILE.tar.gz` | `cifar-100-binary.tar.gz` | 3×32×32 | 100 |
//! | `cifar100:FILE.bin` | one file | 3×32×32 | 100 |
//! | `cifar100-coarse:…` | as `cifar100:`, the 20 coarse labels | 3×32×32 | 20 |
//! | `csv:FILE[.gz]` | features, then the label | features×1×1 | largest label + 1 |
//!
//! Samples are stored flat, one row of `features = C·H·W` values each, in
//! NCHW order: channel planes one after the other, each plane row-major
//! (CIFAR's red, green and blue planes exactly as in its binary files).
//! [`Dataset::dims`] gives the shape.
//!
//! Every loader validates its input and fails with one line naming the
//! file and what was expected, never a panic. Normalisation and the
//! train/test split are explicit, seeded, and described in
//! [`Dataset::notes`].
//!
//! Memory: a gzip-compressed input (a file, or the whole stream of a
//! `.tar.gz` archive) may inflate to at most [`inflate_limit`] bytes: the
//! smaller of 8 GiB and half the available memory, or
//! `FDGR_INFLATE_LIMIT_MIB` MiB when that environment variable is set; a
//! larger stream is rejected ("inflates to more than N MiB") before it
//! fills the memory. Before the samples are copied to `f32`, the size of
//! the copy is checked against the available memory ([`check_alloc`]).

mod cifar;
mod csv;
mod idx;
mod limits;

pub use limits::*;

use anyhow::{bail, Context, Result};
use fdgr_kernel::Rng;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Samples and labels of one split, row-major (n × features).
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// Inputs.
    pub x: Vec<f32>,
    /// Class labels.
    pub y: Vec<u32>,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// A loaded, normalised, split data set.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Name as given (`mnist5k`, `csv:path`, …).
    pub name: String,
    /// Inputs per sample (`C·H·W`, see [`Dataset::dims`]).
    pub features: usize,
    /// Shape of one sample, (channels, height, width), in NCHW order: a
    /// sample's row holds the C planes one after the other, each H rows of
    /// W values. Images: 1×8×8 (`digits`), 1×28×28 (`mnist5k`, IDX files:
    /// as their header says), 3×32×32 (CIFAR, planes R, G, B); CSV:
    /// (features, 1, 1).
    pub dims: (usize, usize, usize),
    /// Number of classes (labels are 0..classes).
    pub classes: usize,
    /// Training split.
    pub train: Split,
    /// Test split.
    pub test: Split,
    /// Human-readable description of source, normalisation and split.
    pub notes: Vec<String>,
    /// The normalised value of a stored 0 (a black pixel) per channel:
    /// what a random crop pads with (0 for `auto`, −mean/std for
    /// `channel`; 0 for the per-feature modes).
    pub zero: Vec<f32>,
    /// How the inputs were scaled, with the statistics used (stored with
    /// the model, so evaluation and export scale inputs the same way).
    pub pre: Preprocess,
}

/// How a data set was split and its inputs scaled: the mode in effect
/// (`auto` resolved: pixels divided by the format's maximum, or `standard`
/// for CSV) and its statistics from the training split. A model keeps it
/// in its metadata (`fdgr.preprocess`); [`load_with`] applies it to data
/// instead of computing new statistics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    /// The data set it was computed on (`--data`).
    pub data: String,
    /// The normalisation in effect.
    pub normalize: Normalize,
    /// Seed of the stratified split.
    pub seed: u64,
    /// Fraction held out for testing.
    pub test_frac: f64,
    /// Subtracted first: per feature (`unit`, `standard`) or per channel
    /// (`channel`); empty for `auto` and `none`.
    pub shift: Vec<f32>,
    /// Then divided by: per feature or per channel; `auto`: the one pixel
    /// maximum; empty for `none`.
    pub scale: Vec<f32>,
}

/// How inputs are scaled.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Images: divide by the format's maximum pixel value (16 or 255);
    /// CSV: standardise each feature with the training split's mean and std.
    #[default]
    Auto,
    /// Leave values as stored.
    None,
    /// Per feature, min-max to [0, 1] with the training split's range.
    Unit,
    /// Per feature, (x − mean)/std with the training split's statistics.
    Standard,
    /// Per channel, (x − mean)/std with the mean and std of all of that
    /// channel's values in the training split (the CIFAR recipes'
    /// `Normalize(mean, std)`). For data without channels (CSV, shape
    /// features×1×1) each feature is a channel, so this equals `standard`.
    Channel,
}

/// Loading options.
#[derive(Clone, Copy, Debug)]
pub struct DataOptions {
    /// Seed of the stratified split.
    pub seed: u64,
    /// Fraction of each class held out for testing, when the source has no
    /// test set of its own.
    pub test_frac: f64,
    /// Input scaling.
    pub normalize: Normalize,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            seed: 1,
            test_frac: 0.2,
            normalize: Normalize::Auto,
        }
    }
}

/// Raw samples as read from a source, before normalisation and split.
#[derive(Debug, Default)]
pub(crate) struct Raw {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    /// Shape of one sample (C, H, W); `x` holds C·H·W values per sample.
    pub dims: (usize, usize, usize),
    /// Largest possible value for image formats (16, 255); None for CSV.
    pub pixel_max: Option<f32>,
    /// Number of classes fixed by the format (CIFAR); None: largest label + 1.
    pub classes: Option<usize>,
    /// What the reader did that the user should know (a skipped CSV
    /// header), for [`Dataset::notes`].
    pub notes: Vec<String>,
}

impl Raw {
    /// Values per sample.
    pub fn features(&self) -> usize {
        self.dims.0 * self.dims.1 * self.dims.2
    }

    /// Gives flat rows of `c·h·w` values the image shape (c, h, w).
    fn shaped(mut self, dims: (usize, usize, usize), name: &str) -> Result<Raw> {
        let f = dims.0 * dims.1 * dims.2;
        if self.features() != f {
            bail!(
                "{name}: {} values per sample, expected {f} ({}x{}x{} images)",
                self.features(),
                dims.0,
                dims.1,
                dims.2
            );
        }
        self.dims = dims;
        Ok(self)
    }
}

const DIGITS: &[u8] = include_bytes!("../../../data/digits.csv.gz");
const MNIST5K: &[u8] = include_bytes!("../../../data/mnist_5k.csv.gz");

/// Names accepted by `--data`, for help texts.
pub const DATA_HELP: &str = "digits | mnist5k | mnist8 (mnist5k in the UCI digits' 8x8 format) | mnist:DIR | idx:IMAGES,LABELS | cifar10:DIR | cifar10:FILE.bin | cifar10:FILE.tar.gz | cifar100:DIR | cifar100:FILE.bin | cifar100:FILE.tar.gz | cifar100-coarse:(as cifar100:, 20 coarse labels) | csv:FILE[.gz]";

/// MNIST images (1×28×28, 0..255) made the way the UCI optical digits
/// were made from their 32×32 bitmaps: binarized (≥ 128 is on), centred in
/// a 32×32 bitmap (2 pixels of margin), and the on pixels of each 4×4
/// block counted: 1×8×8 values 0..16 ([`Raw::pixel_max`] 16), so a model
/// trained on them takes UCI digits as they are — a source domain for the
/// UCI digits with other writers and another pipeline.
pub(crate) fn uci_digits_format(m: Raw) -> Raw {
    let n = m.y.len();
    let mut x = Vec::with_capacity(n * 64);
    for img in m.x.chunks_exact(28 * 28) {
        let mut blocks = [0u8; 64];
        for r in 0..28 {
            for c in 0..28 {
                if img[r * 28 + c] >= 128.0 {
                    let (br, bc) = ((r + 2) / 4, (c + 2) / 4);
                    blocks[br * 8 + bc] += 1;
                }
            }
        }
        x.extend(blocks.iter().map(|&b| f32::from(b)));
    }
    Raw {
        x,
        y: m.y,
        dims: (1, 8, 8),
        pixel_max: Some(16.0),
        classes: m.classes,
        notes: m.notes,
    }
}

/// Text taken from a file (a field, a name, a decoder's message), fit for
/// a one-line error: control characters escaped, at most `max` characters.
pub(crate) fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds `dir/name` or `dir/name.gz`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Loads a data set from a `--data` spec.
pub fn load(spec: &str, opt: &DataOptions) -> Result<Dataset> {
    load_with(spec, opt, None)
}

/// A data set as read: training samples, the source's own test split if
/// it has one, and a description of the source.
type Loaded = (Raw, Option<Raw>, String);

/// `--data mnist:DIR`: the four IDX files of an MNIST-format directory
/// (gzipped or not), its own train/test split.
fn mnist_dir(arg: &str) -> Result<Loaded> {
    let dir = Path::new(arg);
    if !dir.is_dir() {
        bail!("{arg}: not a directory (expected MNIST IDX files train-images-idx3-ubyte etc.)");
    }
    let need =
        |n: &str| find(dir, n).with_context(|| format!("{}: missing {n}[.gz]", dir.display()));
    let train = idx::load_pair(
        &need("train-images-idx3-ubyte")?,
        &need("train-labels-idx1-ubyte")?,
    )?;
    let test = idx::load_pair(
        &need("t10k-images-idx3-ubyte")?,
        &need("t10k-labels-idx1-ubyte")?,
    )?;
    Ok((
        train,
        Some(test),
        format!("MNIST-format IDX files in {arg} (own train/test split)"),
    ))
}

/// `--data cifar10|cifar100|cifar100-coarse:PATH`: a directory of binary
/// batches, the archive, or one binary file.
fn cifar_files(kind: &str, arg: &str) -> Result<Loaded> {
    let fmt = match kind {
        "cifar10" => cifar::Cifar::Ten,
        "cifar100" => cifar::Cifar::Hundred { coarse: false },
        _ => cifar::Cifar::Hundred { coarse: true },
    };
    let p = Path::new(arg);
    Ok(if p.is_dir() {
        let (train, test) = cifar::load_dir(p, fmt)?;
        (
            train,
            Some(test),
            format!(
                "{} binary files in {arg}{} (own train/test split)",
                fmt.title(),
                fmt.label_note()
            ),
        )
    } else if cifar::is_archive(p) {
        let (train, test) = cifar::load_archive(p, fmt)?;
        (
            train,
            Some(test),
            format!(
                "{} archive {arg}{} (own train/test split)",
                fmt.title(),
                fmt.label_note()
            ),
        )
    } else {
        let mut train = Raw::default();
        cifar::append(p, fmt, &mut train)?;
        (
            train,
            None,
            format!("{} binary file {arg}{}", fmt.title(), fmt.label_note()),
        )
    })
}

/// [`load`], scaling the inputs with `given` (a model's stored
/// preprocessing: its mode and statistics) instead of statistics of this
/// data's own training split; `opt.normalize` is then ignored.
pub fn load_with(spec: &str, opt: &DataOptions, given: Option<&Preprocess>) -> Result<Dataset> {
    if !(0.0..1.0).contains(&opt.test_frac) || opt.test_frac <= 0.0 {
        bail!(
            "--test-frac {}: expected a fraction in (0, 1)",
            opt.test_frac
        );
    }
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a))
            if [
                "mnist",
                "idx",
                "cifar10",
                "cifar100",
                "cifar100-coarse",
                "csv",
            ]
            .contains(&k) =>
        {
            (k, a)
        }
        _ => (spec, ""),
    };
    let (raw, test, source): Loaded = match kind {
        "digits" => (
            csv::parse(
                &gunzip_if(DIGITS.to_vec(), "built-in digits")?,
                "built-in digits",
                Some(16.0),
            )?
            .shaped((1, 8, 8), "built-in digits")?,
            None,
            "UCI optical digits (1797 samples, 8x8, values 0..16; data/digits.csv.gz)".into(),
        ),
        "mnist5k" => (
            csv::parse(
                &gunzip_if(MNIST5K.to_vec(), "built-in mnist5k")?,
                "built-in mnist5k",
                Some(255.0),
            )?
            .shaped((1, 28, 28), "built-in mnist5k")?,
            None,
            "MNIST 5k subset (500 per class, 28x28; data/mnist_5k.csv.gz)".into(),
        ),
        "mnist8" => {
            let m = csv::parse(
                &gunzip_if(MNIST5K.to_vec(), "built-in mnist5k")?,
                "built-in mnist5k",
                Some(255.0),
            )?
            .shaped((1, 28, 28), "built-in mnist5k")?;
            (
                uci_digits_format(m),
                None,
                "the MNIST 5k subset in the UCI optical digits format (each 28x28 image binarized at \
                 128, centred in a 32x32 bitmap, its on pixels counted in 4x4 blocks: 8x8, values \
                 0..16; data/mnist_5k.csv.gz)"
                    .into(),
            )
        }
        "mnist" => mnist_dir(arg)?,
        "idx" => {
            let (img, lab) = arg
                .split_once(',')
                .with_context(|| format!("--data idx:{arg}: expected idx:IMAGES,LABELS"))?;
            (
                idx::load_pair(Path::new(img), Path::new(lab))?,
                None,
                format!("IDX images {img}, labels {lab}"),
            )
        }
        "cifar10" | "cifar100" | "cifar100-coarse" => cifar_files(kind, arg)?,
        "csv" => {
            let p = Path::new(arg);
            (
                csv::parse(&read_maybe_gz(p)?, &p.display().to_string(), None)?,
                None,
                format!("CSV {arg} (last column = label)"),
            )
        }
        _ => bail!("--data {spec}: unknown data set (expected {DATA_HELP})"),
    };
    finish(spec, raw, test, source, opt, given)
}

fn finish(
    name: &str,
    mut raw: Raw,
    test: Option<Raw>,
    source: String,
    opt: &DataOptions,
    given: Option<&Preprocess>,
) -> Result<Dataset> {
    let features = raw.features();
    let dims = raw.dims;
    if let Some(t) = &test {
        if t.dims != dims {
            bail!(
                "{name}: test set has {} features ({}), training set {features} ({})",
                t.features(),
                shape_str(t.dims),
                shape_str(dims)
            );
        }
    }
    let classes = classes_of(name, &raw, test.as_ref())?;
    let shape = if dims.1 * dims.2 > 1 {
        format!(" ({})", shape_str(dims))
    } else {
        String::new()
    };
    let mut notes = vec![format!(
        "data {name}: {source}; {} samples, {features} features{shape}, {classes} classes",
        raw.y.len() + test.as_ref().map_or(0, |t| t.y.len())
    )];
    notes.append(&mut raw.notes);
    if let Some(t) = &test {
        notes.extend(t.notes.iter().cloned());
    }
    let pixel_max = raw.pixel_max;
    let (mut train, mut test) = split(name, raw, test, classes, opt, &mut notes)?;
    if train.is_empty() || test.is_empty() {
        bail!(
            "{name}: the split left an empty train or test set ({} / {})",
            train.len(),
            test.len()
        );
    }
    let mode = match (given.map_or(opt.normalize, |g| g.normalize), pixel_max) {
        (Normalize::Auto, Some(_)) => Normalize::Auto,
        (Normalize::Auto, None) => Normalize::Standard,
        (m, _) => m,
    };
    let mut pre = Preprocess {
        data: name.to_string(),
        normalize: mode,
        seed: opt.seed,
        test_frac: opt.test_frac,
        shift: vec![],
        scale: vec![],
    };
    debug_assert_eq!(train.x.len(), train.len() * features);
    // what a stored 0 (a black pixel) becomes, per channel: the padding of
    // a random crop
    let mut zero = vec![0.0f32; dims.0];
    let norm = Normalizer {
        name,
        dims,
        features,
        given,
        pixel_max,
    };
    let splits = (&mut train, &mut test);
    match mode {
        Normalize::Auto => pre.scale = vec![norm.auto(splits, &mut notes)?],
        Normalize::None => notes.push("normalisation: none (values as stored)".into()),
        Normalize::Unit | Normalize::Standard => {
            (pre.shift, pre.scale) = norm.per_feature(mode, splits, &mut notes)?;
        }
        Normalize::Channel => {
            let (mean, std) = norm.per_channel(splits, &mut notes)?;
            for ((z, m), sd) in zero.iter_mut().zip(&mean).zip(&std) {
                *z = -m / sd;
            }
            (pre.shift, pre.scale) = (mean, std);
        }
    }
    if let Some(g) = given {
        notes.push(format!(
            "normalisation statistics: the model's own (from the training split of {}, seed {})",
            g.data, g.seed
        ));
    }
    Ok(Dataset {
        name: name.to_string(),
        features,
        dims,
        classes,
        train,
        test,
        notes,
        zero,
        pre,
    })
}

/// The number of classes: the format's, or the largest label + 1; at
/// least 2, and every label below it.
fn classes_of(name: &str, raw: &Raw, test: Option<&Raw>) -> Result<usize> {
    let max_label = raw
        .y
        .iter()
        .chain(test.iter().flat_map(|t| t.y.iter()))
        .copied()
        .max()
        .unwrap_or(0);
    let classes = match raw.classes {
        Some(c) if (max_label as usize) < c => c,
        Some(c) => bail!(
            "{name}: label {max_label} out of range (expected 0..{})",
            c - 1
        ),
        None => max_label as usize + 1,
    };
    if classes < 2 {
        bail!("{name}: labels must span at least 2 classes (found only label {max_label})");
    }
    Ok(classes)
}

/// The train and test splits: the source's own, or a stratified split of
/// `raw` (`opt`'s fraction and seed); says which in `notes`.
fn split(
    name: &str,
    raw: Raw,
    test: Option<Raw>,
    classes: usize,
    opt: &DataOptions,
    notes: &mut Vec<String>,
) -> Result<(Split, Split)> {
    Ok(match test {
        Some(t) => {
            notes.push(format!(
                "split: the source's own ({} train / {} test)",
                raw.y.len(),
                t.y.len()
            ));
            (Split { x: raw.x, y: raw.y }, Split { x: t.x, y: t.y })
        }
        None => {
            // the split copies the samples while the source is held
            check_items(
                &format!("{name}: the train/test split's copy of the samples"),
                raw.x.len().saturating_add(raw.y.len()),
                4,
            )?;
            let (tr, te, per_class) = stratified_split(&raw, classes, opt.test_frac, opt.seed);
            notes.push(format!(
                "split: stratified, seed {}, {:.0}% of each class held out: {} train / {} test ({per_class})",
                opt.seed,
                opt.test_frac * 100.0,
                tr.len(),
                te.len()
            ));
            (tr, te)
        }
    })
}

/// The normalisation of a data set's splits: its facts, and the model's
/// stored statistics when given (`fdgr eval`, `--init`).
struct Normalizer<'a> {
    name: &'a str,
    dims: (usize, usize, usize),
    features: usize,
    given: Option<&'a Preprocess>,
    pixel_max: Option<f32>,
}

/// The training and test splits, normalised in place.
type Splits<'a> = (&'a mut Split, &'a mut Split);

impl Normalizer<'_> {
    /// The stored statistics, checked against this data's shape (`want`
    /// values each); `None` without a model.
    fn stored(&self, want: usize) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Some(g) = self.given else { return Ok(None) };
        let ok = g.shift.len() == want
            && g.scale.len() == want
            && g.shift.iter().chain(&g.scale).all(|v| v.is_finite())
            && g.scale.iter().all(|v| *v != 0.0);
        if !ok {
            bail!(
                "{}: the model's stored normalisation ({:?}, {} shifts, {} scales, from {}) does \
                 not fit this data ({want} expected, finite, scales non-zero)",
                self.name,
                g.normalize,
                g.shift.len(),
                g.scale.len(),
                g.data
            );
        }
        Ok(Some((g.shift.clone(), g.scale.clone())))
    }

    /// Pixels divided by the pixel maximum (the model's stored one when
    /// given); returns it.
    fn auto(&self, (train, test): Splits<'_>, notes: &mut Vec<String>) -> Result<f32> {
        let name = self.name;
        let m = match self.given {
            Some(g) if g.scale.len() == 1 && g.scale[0].is_finite() && g.scale[0] > 0.0 => {
                g.scale[0]
            }
            Some(g) => bail!(
                "{name}: the model's stored normalisation (auto, scale {:?}) is not one positive pixel maximum",
                g.scale
            ),
            None => self.pixel_max.unwrap_or(1.0),
        };
        for v in train.x.iter_mut().chain(test.x.iter_mut()) {
            *v /= m;
        }
        notes.push(format!("normalisation: pixels / {m} -> [0, 1]"));
        Ok(m)
    }

    /// Per-feature min-max (`Unit`) or standardisation (`Standard`), with
    /// the training split's statistics (or the stored ones); returns the
    /// shifts and scales.
    fn per_feature(
        &self,
        mode: Normalize,
        (train, test): Splits<'_>,
        notes: &mut Vec<String>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (name, dims, features) = (self.name, self.dims, self.features);
        let (shift, scale) = match self.stored(features)? {
            Some(st) => st,
            None => feature_stats(&train.x, features, mode),
        };
        if let Some(j) = scale.iter().position(|s| !s.is_finite()) {
            let (lo, hi) = column_range(&train.x, features, j);
            bail!(
                "{name}: {}: the training values span {:e} .. {:e}, a range of {:.3e} that overflows f32 (--normalize unit divides by it); rescale the column or use --normalize none",
                feature_name(dims, j),
                lo as f32,
                hi as f32,
                hi - lo
            );
        }
        for v in [&mut train.x, &mut test.x] {
            for row in v.chunks_exact_mut(features) {
                for ((x, s), c) in row.iter_mut().zip(&shift).zip(&scale) {
                    *x = (*x - s) / c;
                }
            }
        }
        let flag = if mode == Normalize::Unit {
            "unit"
        } else {
            "standard"
        };
        check_finite(name, flag, train, test, features, |j| {
            let (s, c) = (shift[j], scale[j]);
            let stats = if mode == Normalize::Unit {
                format!("minimum {s:e}, range {c:e}")
            } else {
                format!("mean {s:e}, std {c:e}")
            };
            (feature_name(dims, j), stats)
        })?;
        notes.push(format!(
            "normalisation: {} per feature, statistics from the training split",
            if mode == Normalize::Unit {
                "min-max to [0, 1]"
            } else {
                "standardised (x - mean) / std"
            }
        ));
        Ok((shift, scale))
    }

    /// Per-channel standardisation with the training split's statistics
    /// (or the stored ones); returns the means and standard deviations.
    fn per_channel(
        &self,
        (train, test): Splits<'_>,
        notes: &mut Vec<String>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (name, dims, features, pixel_max) =
            (self.name, self.dims, self.features, self.pixel_max);
        let (mean, std) = match self.stored(dims.0)? {
            Some(st) => st,
            None => channel_stats(&train.x, dims),
        };
        let plane = dims.1 * dims.2;
        for v in [&mut train.x, &mut test.x] {
            for row in v.chunks_exact_mut(features) {
                for ((p, m), s) in row.chunks_exact_mut(plane).zip(&mean).zip(&std) {
                    for x in p {
                        *x = (*x - m) / s;
                    }
                }
            }
        }
        let plane = plane.max(1);
        check_finite(name, "channel", train, test, features, |j| {
            let c = j / plane;
            let what = if plane == 1 {
                format!("column {}", c + 1)
            } else {
                format!("channel {}", c + 1)
            };
            (what, format!("mean {:e}, std {:e}", mean[c], std[c]))
        })?;
        let stats = if dims.0 <= 4 {
            let unit = pixel_max.unwrap_or(1.0);
            let list = |v: &[f32]| {
                v.iter()
                    .map(|x| format!("{:.4}", x / unit))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                ": mean ({}), std ({}){}",
                list(&mean),
                list(&std),
                pixel_max.map_or(String::new(), |m| format!(" of pixels / {m}"))
            )
        } else {
            String::new()
        };
        notes.push(format!(
            "normalisation: standardised (x - mean) / std per channel ({} channels), statistics from the training split{stats}",
            dims.0
        ));
        Ok((mean, std))
    }
}

/// Feature `j` of samples of shape `dims`, for messages: a CSV column, or
/// an image's pixel.
fn feature_name(dims: (usize, usize, usize), j: usize) -> String {
    let plane = dims.1 * dims.2;
    if plane <= 1 {
        format!("column {}", j + 1)
    } else {
        format!(
            "feature {} (channel {}, row {}, column {})",
            j + 1,
            j / plane + 1,
            j % plane / dims.2.max(1) + 1,
            j % dims.2.max(1) + 1
        )
    }
}

/// Smallest and largest value of feature `j` in rows of `f` values, in f64.
fn column_range(x: &[f32], f: usize, j: usize) -> (f64, f64) {
    x.iter()
        .skip(j)
        .step_by(f.max(1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v as f64), b.max(v as f64))
        })
}

/// Checks that normalisation (`--normalize flag`) left every value finite
/// in f32; else names the split, the sample and, through `describe`
/// (feature index -> its name and statistics), the feature.
fn check_finite(
    name: &str,
    flag: &str,
    train: &Split,
    test: &Split,
    features: usize,
    describe: impl Fn(usize) -> (String, String),
) -> Result<()> {
    for (split, s) in [("training", train), ("test", test)] {
        if let Some(p) = s.x.iter().position(|v| !v.is_finite()) {
            let f = features.max(1);
            let (what, stats) = describe(p % f);
            bail!(
                "{name}: {what}: --normalize {flag} gives a non-finite value for {split} sample {} ({stats} of the training values): the values are too large for f32 arithmetic; rescale the column or use --normalize none",
                p / f + 1
            );
        }
    }
    Ok(())
}

/// `C×H×W`, for messages.
fn shape_str(d: (usize, usize, usize)) -> String {
    format!("{}x{}x{}", d.0, d.1, d.2)
}

/// Per-channel mean and std over every sample and pixel of `x` (rows of
/// `C·H·W` values, NCHW); a constant channel gets std 1.
fn channel_stats(x: &[f32], dims: (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let (c, plane) = (dims.0.max(1), (dims.1 * dims.2).max(1));
    let planes = |ch: usize| {
        x.chunks_exact(c * plane)
            .map(move |row| &row[ch * plane..(ch + 1) * plane])
    };
    let n = ((x.len() / (c * plane)) * plane).max(1) as f64;
    (0..c)
        .map(|ch| {
            // two passes in f64: the mean, then the squared deviations
            let mean = planes(ch)
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>()
                / n;
            let var = planes(ch)
                .map(|p| {
                    p.iter()
                        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / n;
            let std = if var > 1e-12 { var.sqrt() } else { 1.0 };
            (mean as f32, std as f32)
        })
        .unzip()
}

/// Per-feature (shift, scale) for min-max or standardisation; constant
/// features get scale 1.
fn feature_stats(x: &[f32], f: usize, mode: Normalize) -> (Vec<f32>, Vec<f32>) {
    let n = (x.len() / f).max(1) as f64;
    let mut shift = vec![0.0f32; f];
    let mut scale = vec![1.0f32; f];
    for j in 0..f {
        let col = x.iter().skip(j).step_by(f).map(|v| *v as f64);
        if mode == Normalize::Unit {
            let (lo, hi) = col.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            shift[j] = lo as f32;
            scale[j] = if hi > lo { (hi - lo) as f32 } else { 1.0 };
        } else {
            let (s, s2) = col.fold((0.0, 0.0), |(a, b), v| (a + v, b + v * v));
            let mean = s / n;
            let var = (s2 / n - mean * mean).max(0.0);
            shift[j] = mean as f32;
            scale[j] = if var > 1e-12 { var.sqrt() as f32 } else { 1.0 };
        }
    }
    (shift, scale)
}

/// Stratified, seeded split: each class's samples are shuffled and
/// round(test_frac·count) of them go to the test split. Sample order within
/// each split follows the original file order.
fn stratified_split(
    raw: &Raw,
    classes: usize,
    test_frac: f64,
    seed: u64,
) -> (Split, Split, String) {
    let f = raw.features();
    let mut by_class: Vec<Vec<usize>> = vec![vec![]; classes];
    for (i, &y) in raw.y.iter().enumerate() {
        by_class[y as usize].push(i);
    }
    let mut rng = Rng::new(seed ^ 0x5851_F42D_4C95_7F2D);
    let mut is_test = vec![false; raw.y.len()];
    let mut counts = vec![];
    for idx in by_class.iter_mut() {
        rng.shuffle(idx);
        let k = (idx.len() as f64 * test_frac).round() as usize;
        for &i in idx.iter().take(k) {
            is_test[i] = true;
        }
        counts.push((idx.len() - k, k));
    }
    let mut tr = Split::default();
    let mut te = Split::default();
    for (i, &t) in is_test.iter().enumerate() {
        let s = if t { &mut te } else { &mut tr };
        s.x.extend_from_slice(&raw.x[i * f..(i + 1) * f]);
        s.y.push(raw.y[i]);
    }
    let uniform = counts.windows(2).all(|w| w[0] == w[1]);
    let desc = if uniform {
        format!("{}/{} per class", counts[0].0, counts[0].1)
    } else {
        let lo = counts.iter().map(|c| c.1).min().unwrap_or(0);
        let hi = counts.iter().map(|c| c.1).max().unwrap_or(0);
        format!("{lo}..{hi} test samples per class")
    };
    (tr, te, desc)
}

#[cfg(test)]
mod tests;
