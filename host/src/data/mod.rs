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

/// Reads a file fully, un-gzipping it when it starts with the gzip magic
/// (at most [`inflate_limit`] bytes).
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    if let Ok(m) = std::fs::metadata(path) {
        check_alloc(&format!("{name}: reading the file"), m.len())?;
    }
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read"))?;
    gunzip_if(bytes, &name)
}

fn gunzip_if(bytes: Vec<u8>, name: &str) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let limit = inflate_limit()?;
        let mut out = Vec::new();
        Capped::new(flate2::read::MultiGzDecoder::new(&bytes[..]), limit)
            .read_to_end(&mut out)
            .map_err(|e| match too_large(&e) {
                Some(t) => anyhow::anyhow!("{name}: {t}"),
                None => anyhow::Error::new(e)
                    .context(format!("{name}: corrupt or truncated gzip stream")),
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Default ceiling of [`inflate_limit`]: 8 GiB.
pub const INFLATE_CEILING: u64 = 8 << 30;

/// The environment variable that sets [`inflate_limit`], in MiB.
pub const INFLATE_LIMIT_ENV: &str = "FDGR_INFLATE_LIMIT_MIB";

/// The limit on decompressed data, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflateLimit {
    /// Bytes.
    pub bytes: u64,
    /// Set by [`INFLATE_LIMIT_ENV`] (else the default).
    pub from_env: bool,
}

/// The most bytes that one gzip-compressed input (a file, or the whole
/// stream of a `.tar.gz` archive) may inflate to: `FDGR_INFLATE_LIMIT_MIB`
/// MiB when that environment variable is set, else the smaller of
/// [`INFLATE_CEILING`] (8 GiB) and half the [`available_memory`] (half: a
/// buffer that grows while it is filled may briefly need twice its size),
/// or 8 GiB when the available memory is unknown.
pub fn inflate_limit() -> Result<InflateLimit> {
    if let Some(v) = std::env::var_os(INFLATE_LIMIT_ENV) {
        let v = v.to_string_lossy();
        let mib: u64 = v.trim().parse().ok().filter(|&m| m > 0).with_context(|| {
            format!(
                "{INFLATE_LIMIT_ENV}={}: expected a positive whole number of MiB",
                printable(&v, 40)
            )
        })?;
        let bytes = mib
            .checked_mul(1 << 20)
            .with_context(|| format!("{INFLATE_LIMIT_ENV}={mib}: too large"))?;
        return Ok(InflateLimit {
            bytes,
            from_env: true,
        });
    }
    let bytes =
        crate::memory::available().map_or(INFLATE_CEILING, |(a, _)| (a / 2).min(INFLATE_CEILING));
    Ok(InflateLimit {
        bytes,
        from_env: false,
    })
}

/// The error of a decompressed stream longer than its [`InflateLimit`].
#[derive(Debug)]
pub(crate) struct TooLarge(InflateLimit);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "inflates to more than {} MiB (the limit on decompressed data{})",
            self.0.bytes >> 20,
            if self.0.from_env {
                format!(", set by {INFLATE_LIMIT_ENV}")
            } else {
                format!(": the smaller of 8 GiB and half the available memory; set {INFLATE_LIMIT_ENV} to change it")
            }
        )
    }
}

impl std::error::Error for TooLarge {}

/// The [`TooLarge`] error inside `e`, if that is what it is.
pub(crate) fn too_large(e: &std::io::Error) -> Option<&TooLarge> {
    e.get_ref().and_then(|i| i.downcast_ref::<TooLarge>())
}

/// A reader that fails with [`TooLarge`] once more than its limit has
/// come out of `inner` (a decompressor).
pub(crate) struct Capped<R> {
    inner: R,
    left: u64,
    limit: InflateLimit,
}

impl<R> Capped<R> {
    /// At most `limit.bytes` bytes of `inner`.
    pub(crate) fn new(inner: R, limit: InflateLimit) -> Self {
        Capped {
            inner,
            left: limit.bytes,
            limit,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.left = 0;
                Err(std::io::Error::other(TooLarge(self.limit)))
            }
        }
    }
}

/// Bytes of memory this process can still allocate, as far as the system
/// tells: the smallest of the kernel's estimate of available memory
/// (`MemAvailable` in `/proc/meminfo`), the room left under the process's
/// address-space limit (`ulimit -v`), and the room left under its control
/// group's memory limit (cgroup v2 `memory.max` or v1
/// `memory.limit_in_bytes`, its page cache counted as free).
/// `None` where none of these can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mem = read("/proc/meminfo").and_then(|t| kib_field(&t, "MemAvailable:"));
    let address_space = read("/proc/self/limits")
        .and_then(|t| address_space_limit(&t))
        .map(|lim| {
            let used = read("/proc/self/status")
                .and_then(|t| kib_field(&t, "VmSize:"))
                .unwrap_or(0);
            lim.saturating_sub(used)
        });
    let cgroup =
        read("/proc/self/cgroup").and_then(|t| cgroup_room(&t, Path::new("/sys/fs/cgroup")));
    [mem, address_space, cgroup].into_iter().flatten().min()
}

/// `key   N kB` of `/proc/meminfo` or `/proc/self/status`, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft address-space limit of `/proc/self/limits`, in bytes; `None`
/// when unlimited.
fn address_space_limit(text: &str) -> Option<u64> {
    let key = "Max address space";
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The room left under the memory limit of this process's control group
/// (`/proc/self/cgroup`'s text): limit − (usage − page cache), the page
/// cache (active and inactive file pages) being reclaimable.
/// `None` when there is no limit or it cannot be read. `mount`: where the
/// control groups are mounted (`/sys/fs/cgroup`).
fn cgroup_room(cgroups: &str, mount: &Path) -> Option<u64> {
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).ok();
    let stat = |d: &Path, key: &str| {
        read(d, "memory.stat").and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
        })
    };
    // the process's own group, else the root of the mount (a container's
    // view of its own group)
    let dirs = |root: PathBuf, rel: &str| [root.join(rel.trim_start_matches('/')), root];
    // limit, usage and page cache of a group directory (v2 or v1 names)
    let room = |d: &Path, [max, used, active, inactive]: [&str; 4]| -> Option<u64> {
        // no limit: "max" (v2), a huge number (v1)
        let max: u64 = read(d, max)?.trim().parse().ok().filter(|&m| m < 1 << 60)?;
        let used: u64 = read(d, used)?.trim().parse().ok()?;
        let cache = stat(d, active)
            .unwrap_or(0)
            .saturating_add(stat(d, inactive).unwrap_or(0));
        Some(max.saturating_sub(used.saturating_sub(cache)))
    };
    let v2 = [
        "memory.max",
        "memory.current",
        "active_file ",
        "inactive_file ",
    ];
    let v1 = [
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        "total_active_file ",
        "total_inactive_file ",
    ];
    let mut found = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (root, names) = if id == "0" && ctrl.is_empty() {
            (mount.to_path_buf(), v2)
        } else if ctrl.split(',').any(|c| c == "memory") {
            (mount.join("memory"), v1)
        } else {
            continue;
        };
        let r = dirs(root, rel)
            .into_iter()
            .find(|d| d.join(names[0]).is_file())
            .and_then(|d| room(&d, names));
        found = found.into_iter().chain(r).min();
    }
    found
}

/// `bytes` in GiB (MiB below 1 GiB), for messages.
fn size_str(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Checks, before `bytes` bytes are allocated for `what`, that that much
/// memory is available ([`available_memory`]); passes where the
/// available memory is unknown. Errors "`what` needs X GiB, Y GiB
/// available".
pub fn check_alloc(what: &str, bytes: u64) -> Result<()> {
    check_alloc_within(what, bytes, crate::memory::available().map(|(b, _)| b))
}

/// [`check_alloc`] against `available` bytes.
fn check_alloc_within(what: &str, bytes: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(a) if bytes > a => bail!(
            "{what} needs {}, {} available (--max-memory SIZE overrides)",
            size_str(bytes),
            size_str(a)
        ),
        _ => Ok(()),
    }
}

/// [`check_alloc`] for `count` items of `each` bytes (sizes computed with
/// checked arithmetic).
pub(crate) fn check_items(what: &str, count: usize, each: u64) -> Result<()> {
    let bytes = u64::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(each))
        .with_context(|| format!("{what}: {count} items of {each} bytes overflow a 64-bit size"))?;
    check_alloc(what, bytes)
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
    let (raw, test, source): (Raw, Option<Raw>, String) = match kind {
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
        "mnist" => {
            let dir = Path::new(arg);
            if !dir.is_dir() {
                bail!("{arg}: not a directory (expected MNIST IDX files train-images-idx3-ubyte etc.)");
            }
            let need = |n: &str| {
                find(dir, n).with_context(|| format!("{}: missing {n}[.gz]", dir.display()))
            };
            let train = idx::load_pair(
                &need("train-images-idx3-ubyte")?,
                &need("train-labels-idx1-ubyte")?,
            )?;
            let test = idx::load_pair(
                &need("t10k-images-idx3-ubyte")?,
                &need("t10k-labels-idx1-ubyte")?,
            )?;
            (
                train,
                Some(test),
                format!("MNIST-format IDX files in {arg} (own train/test split)"),
            )
        }
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
        "cifar10" | "cifar100" | "cifar100-coarse" => {
            let fmt = match kind {
                "cifar10" => cifar::Cifar::Ten,
                "cifar100" => cifar::Cifar::Hundred { coarse: false },
                _ => cifar::Cifar::Hundred { coarse: true },
            };
            let p = Path::new(arg);
            if p.is_dir() {
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
            }
        }
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
    let (mut train, mut test) = match test {
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
    };
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
    // the stored statistics, checked against this data's shape
    let stored = |want: usize| -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Some(g) = given else { return Ok(None) };
        let ok = g.shift.len() == want
            && g.scale.len() == want
            && g.shift.iter().chain(&g.scale).all(|v| v.is_finite())
            && g.scale.iter().all(|v| *v != 0.0);
        if !ok {
            bail!(
                "{name}: the model's stored normalisation ({:?}, {} shifts, {} scales, from {}) does \
                 not fit this data ({want} expected, finite, scales non-zero)",
                g.normalize,
                g.shift.len(),
                g.scale.len(),
                g.data
            );
        }
        Ok(Some((g.shift.clone(), g.scale.clone())))
    };
    debug_assert_eq!(train.x.len(), train.len() * features);
    // what a stored 0 (a black pixel) becomes, per channel: the padding of
    // a random crop
    let mut zero = vec![0.0f32; dims.0];
    match mode {
        Normalize::Auto => {
            let m = match given {
                Some(g) if g.scale.len() == 1 && g.scale[0].is_finite() && g.scale[0] > 0.0 => {
                    g.scale[0]
                }
                Some(g) => bail!(
                    "{name}: the model's stored normalisation (auto, scale {:?}) is not one positive pixel maximum",
                    g.scale
                ),
                None => pixel_max.unwrap_or(1.0),
            };
            for v in train.x.iter_mut().chain(test.x.iter_mut()) {
                *v /= m;
            }
            pre.scale = vec![m];
            notes.push(format!("normalisation: pixels / {m} -> [0, 1]"));
        }
        Normalize::None => notes.push("normalisation: none (values as stored)".into()),
        Normalize::Unit | Normalize::Standard => {
            let (shift, scale) = match stored(features)? {
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
            check_finite(name, flag, &train, &test, features, |j| {
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
            (pre.shift, pre.scale) = (shift, scale);
        }
        Normalize::Channel => {
            let (mean, std) = match stored(dims.0)? {
                Some(st) => st,
                None => channel_stats(&train.x, dims),
            };
            for ((z, m), sd) in zero.iter_mut().zip(&mean).zip(&std) {
                *z = -m / sd;
            }
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
            check_finite(name, "channel", &train, &test, features, |j| {
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
mod tests {
    use super::*;

    #[test]
    fn builtin_sets_load_and_split_as_documented() {
        let d = load("mnist5k", &DataOptions::default()).unwrap();
        assert_eq!((d.features, d.classes), (784, 10));
        assert_eq!(d.dims, (1, 28, 28));
        assert_eq!((d.train.len(), d.test.len()), (4000, 1000));
        for c in 0..10 {
            assert_eq!(d.test.y.iter().filter(|&&y| y == c).count(), 100);
        }
        assert!(d.train.x.iter().all(|v| (0.0..=1.0).contains(v)));
        let e = load("digits", &DataOptions::default()).unwrap();
        assert_eq!((e.features, e.classes), (64, 10));
        assert_eq!(e.dims, (1, 8, 8));
        assert_eq!(e.train.len() + e.test.len(), 1797);
        // seeded: same split twice, different split with another seed
        let e2 = load("digits", &DataOptions::default()).unwrap();
        assert_eq!(e.test.y, e2.test.y);
        let e3 = load(
            "digits",
            &DataOptions {
                seed: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert_ne!(e.test.x, e3.test.x);
    }

    #[test]
    fn help_and_messages() {
        for s in [
            "cifar100:DIR",
            "cifar100:FILE.tar.gz",
            "cifar10:FILE.tar.gz",
            "cifar100-coarse:",
        ] {
            assert!(DATA_HELP.contains(s), "{s}");
        }
        let e = load("cifar1000:x", &DataOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown data set") && e.contains("cifar100:"),
            "{e}"
        );
        assert_eq!(printable("a\nb\u{7}c", 10), "a\\nb\\u{7}c");
        assert_eq!(printable("abcdef", 3), "abc...");
    }

    /// A CSV data set through [`finish`]: `rows` of (features, label).
    fn finish_csv(rows: &[(&[f32], u32)], normalize: Normalize) -> Result<Dataset> {
        let text: String = rows
            .iter()
            .map(|(x, y)| {
                let mut l: Vec<String> = x.iter().map(|v| format!("{v:e}")).collect();
                l.push(y.to_string());
                l.join(",") + "\n"
            })
            .collect();
        let raw = csv::parse(text.as_bytes(), "t.csv", None)?;
        let opt = DataOptions {
            normalize,
            test_frac: 0.25,
            ..Default::default()
        };
        finish("csv:t.csv", raw, None, "test".into(), &opt, None)
    }

    #[test]
    fn normalisation_that_overflows_f32_is_an_error_naming_the_column() {
        // column 2 spans ±3e38: its range (6e38) does not fit f32
        let rows: Vec<([f32; 2], u32)> = (0..16)
            .map(|i| {
                let big = if i % 2 == 0 { 3e38 } else { -3e38 };
                ([i as f32, big], (i / 2 % 2) as u32)
            })
            .collect();
        let rows: Vec<(&[f32], u32)> = rows.iter().map(|(x, y)| (&x[..], *y)).collect();
        let e = finish_csv(&rows, Normalize::Unit).unwrap_err().to_string();
        assert!(
            e.starts_with("csv:t.csv: column 2: the training values span -3e38 .. 3e38")
                && e.contains("overflows f32"),
            "{e}"
        );
        // mean 1.5e38: x − mean overflows f32 for −3e38
        let rows: Vec<([f32; 2], u32)> = (0..16)
            .map(|i| {
                let big = if i % 4 == 0 { -3e38 } else { 3e38 };
                ([i as f32, big], (i % 2) as u32)
            })
            .collect();
        let rows: Vec<(&[f32], u32)> = rows.iter().map(|(x, y)| (&x[..], *y)).collect();
        for (mode, flag) in [
            (Normalize::Standard, "standard"),
            (Normalize::Auto, "standard"),
            (Normalize::Channel, "channel"),
        ] {
            let e = finish_csv(&rows, mode).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "csv:t.csv: column 2: --normalize {flag} gives a non-finite value for training sample"
                )),
                "{e}"
            );
        }
        // the same values as stored are left alone
        assert!(finish_csv(&rows, Normalize::None).is_ok());
        // large but harmless values normalise to finite values
        let rows: Vec<([f32; 2], u32)> = (0..16)
            .map(|i| {
                (
                    [i as f32, if i % 2 == 0 { 1e38 } else { -1e38 }],
                    (i / 2 % 2) as u32,
                )
            })
            .collect();
        let rows: Vec<(&[f32], u32)> = rows.iter().map(|(x, y)| (&x[..], *y)).collect();
        for mode in [Normalize::Unit, Normalize::Standard, Normalize::Channel] {
            let d = finish_csv(&rows, mode).unwrap();
            assert!(d.train.x.iter().chain(&d.test.x).all(|v| v.is_finite()));
        }
    }

    #[test]
    fn a_skipped_header_is_in_the_notes() {
        let raw = csv::parse(b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", "h.csv", None).unwrap();
        let opt = DataOptions {
            test_frac: 0.5,
            ..Default::default()
        };
        let d = finish("csv:h.csv", raw, None, "test".into(), &opt, None).unwrap();
        assert_eq!(d.notes[1], "header row skipped: h.csv:1 (a,b,label)");
        assert_eq!(d.train.len() + d.test.len(), 4);
    }

    #[test]
    fn decompression_stops_past_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &zeros).unwrap();
            e.finish().unwrap()
        };
        let limit = |bytes| InflateLimit {
            bytes,
            from_env: true,
        };
        let mut out = vec![];
        let r = Capped::new(flate2::read::MultiGzDecoder::new(&gz[..]), limit(1 << 19))
            .read_to_end(&mut out);
        let e = r.unwrap_err();
        let t = too_large(&e).expect("the limit's error").to_string();
        assert!(
            t.starts_with("inflates to more than 0 MiB") && t.contains(INFLATE_LIMIT_ENV),
            "{t}"
        );
        assert!(out.len() <= (1 << 19) + (1 << 16), "{}", out.len());
        // exactly the limit is fine
        out.clear();
        Capped::new(flate2::read::MultiGzDecoder::new(&gz[..]), limit(1 << 20))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, zeros);
    }

    #[test]
    fn memory_checks_and_what_they_read() {
        assert!(check_alloc_within("x", 10, None).is_ok());
        assert!(check_alloc_within("x", 10, Some(10)).is_ok());
        let e = check_alloc_within("f.bin: 9 images as f32", 3 << 30, Some(1 << 29))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "f.bin: 9 images as f32 needs 3.00 GiB, 512.0 MiB available (--max-memory SIZE overrides)"
        );
        let e = check_items("n", usize::MAX, 8).unwrap_err().to_string();
        assert!(e.contains("overflow"), "{e}");
        let meminfo = "MemTotal:       32000000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(kib_field(meminfo, "MemAvailable:"), Some(2 << 20));
        assert_eq!(kib_field(meminfo, "VmSize:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         4294967296           unlimited            bytes\n";
        assert_eq!(address_space_limit(limits), Some(4 << 30));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(address_space_limit(unlimited), None);
        // control groups: v2 and v1 files, the page cache counted as free;
        // no limit is no answer
        let d = tempfile::tempdir().unwrap();
        let put = |p: &str, t: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        put("job/memory.max", "1000000\n");
        put("job/memory.current", "600000\n");
        put(
            "job/memory.stat",
            "anon 1\nactive_file 100000\ninactive_file 50000\n",
        );
        assert_eq!(cgroup_room("0::/job\n", d.path()), Some(550000));
        put("memory/memory.limit_in_bytes", "9223372036854771712\n");
        put("memory/memory.usage_in_bytes", "5\n");
        assert_eq!(cgroup_room("4:memory:/elsewhere\n", d.path()), None);
        put("memory/memory.limit_in_bytes", "4000\n");
        put("memory/memory.stat", "total_inactive_file 1000\n");
        // a v1 group seen from inside a container (its own path absent:
        // the mount's root), and the smaller of two limits
        assert_eq!(cgroup_room("4:memory:/elsewhere\n", d.path()), Some(4000));
        assert_eq!(
            cgroup_room("4:memory:/elsewhere\n0::/job\n", d.path()),
            Some(4000)
        );
        put("memory/memory.usage_in_bytes", "3500\n");
        assert_eq!(cgroup_room("4:memory:/x\n", d.path()), Some(1500));
        // on Linux something is known, and it is not zero
        if cfg!(target_os = "linux") {
            assert!(available_memory().is_some_and(|a| a > 0));
        }
    }

    #[test]
    fn channel_stats_per_plane() {
        // two samples of 2 channels × 2 pixels: channel 0 = 1, 3, 5, 7;
        // channel 1 constant 4 (std 1 by convention)
        let x = [1.0, 3.0, 4.0, 4.0, 5.0, 7.0, 4.0, 4.0];
        let (m, s) = channel_stats(&x, (2, 1, 2));
        assert_eq!(m, vec![4.0, 4.0]);
        assert_eq!(s, vec![5.0f32.sqrt(), 1.0]);
    }
}
