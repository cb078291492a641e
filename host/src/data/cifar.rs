//! CIFAR-10 and CIFAR-100 in their binary formats.
//!
//! * CIFAR-10 records: 1 label byte (0..9) and 3072 pixel bytes.
//! * CIFAR-100 records: 1 coarse-label byte (0..19), 1 fine-label byte
//!   (0..99) and 3072 pixel bytes; `cifar100:` uses the fine labels,
//!   `cifar100-coarse:` the coarse ones.
//!
//! The pixels are 1024 red, 1024 green, then 1024 blue bytes, each plane
//! 32×32 row-major: the samples keep that order, which is NCHW with shape
//! 3×32×32.
//!
//! Sources: a directory of the extracted files (each may be gzipped), one
//! file, or the distributed archive read directly (`cifar-10-binary.tar.gz`
//! with `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`;
//! `cifar-100-binary.tar.gz` with `cifar-100-binary/train.bin` and
//! `test.bin`; gzipped or plain tar).

use super::{check_items, find, inflate_limit, printable, read_maybe_gz, too_large, Capped, Raw};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

const PIXELS: usize = 3072;
const DIMS: (usize, usize, usize) = (3, 32, 32);

/// Which CIFAR format, and for CIFAR-100 which labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cifar {
    /// CIFAR-10: one label byte.
    Ten,
    /// CIFAR-100: coarse and fine label bytes; `coarse` selects the 20
    /// superclasses instead of the 100 classes.
    Hundred { coarse: bool },
}

impl Cifar {
    /// "CIFAR-10" or "CIFAR-100".
    pub(crate) fn title(self) -> &'static str {
        match self {
            Cifar::Ten => "CIFAR-10",
            Cifar::Hundred { .. } => "CIFAR-100",
        }
    }

    /// Which labels, for the notes.
    pub(crate) fn label_note(self) -> &'static str {
        match self {
            Cifar::Ten => "",
            Cifar::Hundred { coarse: false } => ", fine labels",
            Cifar::Hundred { coarse: true } => ", coarse labels",
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred { .. } => 2,
        }
    }

    fn record(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred { coarse: false } => 100,
            Cifar::Hundred { coarse: true } => 20,
        }
    }

    fn layout(self) -> &'static str {
        match self {
            Cifar::Ten => "label + 3072 pixels",
            Cifar::Hundred { .. } => "coarse label + fine label + 3072 pixels",
        }
    }

    /// File names of the training and test files, as extracted.
    fn files(self) -> (&'static [&'static str], &'static str) {
        match self {
            Cifar::Ten => (
                &[
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ],
                "test_batch.bin",
            ),
            Cifar::Hundred { .. } => (&["train.bin"], "test.bin"),
        }
    }

    /// The distributed archive's name and its top-level directory.
    fn archive(self) -> (&'static str, &'static str) {
        match self {
            Cifar::Ten => ("cifar-10-binary.tar.gz", "cifar-10-batches-bin/"),
            Cifar::Hundred { .. } => ("cifar-100-binary.tar.gz", "cifar-100-binary/"),
        }
    }

    /// The other format, for hints.
    fn other(self) -> Cifar {
        match self {
            Cifar::Ten => Cifar::Hundred { coarse: false },
            Cifar::Hundred { .. } => Cifar::Ten,
        }
    }
}

/// The gist of a decoder's error: its text up to the first colon (the tar
/// reader quotes the raw header bytes after it), made printable.
fn decoder_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    printable(text.split(':').next().unwrap_or_default().trim(), 80)
}

/// True when `b` has the ustar magic of a tar header.
fn looks_like_tar(b: &[u8]) -> bool {
    b.len() >= 262 && &b[257..262] == b"ustar"
}

/// Appends the records in `b` (the contents of `name`).
fn parse(b: &[u8], name: &str, fmt: Cifar, raw: &mut Raw) -> Result<()> {
    let rec = fmt.record();
    if b.is_empty() || b.len() % rec != 0 {
        let other = fmt.other();
        let hint = if looks_like_tar(b) {
            format!(
                "; it is a tar archive: name it .tar, .tar.gz or .tgz to read the members of the {} archive",
                fmt.title()
            )
        } else if !b.is_empty() && b.len() % other.record() == 0 {
            format!(
                "; it is a whole number of {} records: is it {} data?",
                other.title(),
                other.title()
            )
        } else {
            String::new()
        };
        bail!(
            "{name}: {} bytes is not a whole number of {} records ({rec} bytes: {}){hint}",
            b.len(),
            fmt.title(),
            fmt.layout()
        );
    }
    let n = b.len() / rec;
    // the f32 copy of the pixels, and the labels
    check_items(
        &format!("{name}: {n} images as f32"),
        n.saturating_mul(PIXELS + 1),
        4,
    )?;
    raw.x.reserve(n * PIXELS);
    raw.y.reserve(n);
    for (i, r) in b.chunks_exact(rec).enumerate() {
        let y = match fmt {
            Cifar::Ten => {
                if r[0] > 9 {
                    bail!(
                        "{name}: record {i}: label {} out of range (expected 0..9)",
                        r[0]
                    );
                }
                r[0]
            }
            Cifar::Hundred { coarse } => {
                if r[0] > 19 {
                    bail!(
                        "{name}: record {i}: coarse label {} out of range (expected 0..19)",
                        r[0]
                    );
                }
                if r[1] > 99 {
                    bail!(
                        "{name}: record {i}: fine label {} out of range (expected 0..99)",
                        r[1]
                    );
                }
                if coarse {
                    r[0]
                } else {
                    r[1]
                }
            }
        };
        raw.y.push(y as u32);
        raw.x
            .extend(r[fmt.label_bytes()..].iter().map(|&v| v as f32));
    }
    raw.dims = DIMS;
    raw.pixel_max = Some(255.0);
    raw.classes = Some(fmt.classes());
    Ok(())
}

/// Appends the records of one file (raw or gzip).
pub(crate) fn append(path: &Path, fmt: Cifar, raw: &mut Raw) -> Result<()> {
    let b = read_maybe_gz(path)?;
    parse(&b, &path.display().to_string(), fmt, raw)
}

/// Loads the training and test files from an extracted directory.
pub(crate) fn load_dir(dir: &Path, fmt: Cifar) -> Result<(Raw, Raw)> {
    let (train_files, test_file) = fmt.files();
    let need = |f: &str| {
        find(dir, f).with_context(|| {
            format!(
                "{}: missing {f} (expected the {} binary files {}, {test_file}; each may be gzipped)",
                dir.display(),
                fmt.title(),
                train_files.join(", ")
            )
        })
    };
    let mut train = Raw::default();
    for f in train_files {
        append(&need(f)?, fmt, &mut train)?;
    }
    let mut test = Raw::default();
    append(&need(test_file)?, fmt, &mut test)?;
    Ok((train, test))
}

/// True for file names that [`load_archive`] reads: `.tar.gz`, `.tgz`,
/// `.tar`.
pub(crate) fn is_archive(path: &Path) -> bool {
    let n = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    n.ends_with(".tar.gz") || n.ends_with(".tgz") || n.ends_with(".tar")
}

/// Largest allocation made ahead of reading an archive member (its header
/// states its size, which need not be true).
const PREALLOC_MAX: u64 = 1 << 28;

/// Loads the training and test files straight from the distributed archive
/// (gzipped or plain tar), by their member names.
pub(crate) fn load_archive(path: &Path, fmt: Cifar) -> Result<(Raw, Raw)> {
    let name = path.display().to_string();
    let (archive_name, prefix) = fmt.archive();
    let (train_files, test_file) = fmt.files();
    let wanted: Vec<String> = train_files
        .iter()
        .chain(std::iter::once(&test_file))
        .map(|f| format!("{prefix}{f}"))
        .collect();
    let file = std::fs::File::open(path).with_context(|| format!("{name}: cannot read"))?;
    let mut buffered = BufReader::new(file);
    let head = buffered
        .fill_buf()
        .with_context(|| format!("{name}: cannot read"))?;
    let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let reader: Box<dyn Read> = if gz {
        Box::new(Capped::new(
            flate2::read::MultiGzDecoder::new(buffered),
            inflate_limit()?,
        ))
    } else {
        Box::new(buffered)
    };
    let corrupt = |e: std::io::Error| {
        if let Some(t) = too_large(&e) {
            return anyhow::anyhow!("{name}: {t}");
        }
        anyhow::anyhow!(
            "{name}: corrupt or truncated {} ({}; expected the {} archive {archive_name})",
            if gz {
                "gzipped tar archive"
            } else {
                "tar archive"
            },
            decoder_message(&e),
            fmt.title()
        )
    };
    let mut archive = tar::Archive::new(reader);
    let mut found: Vec<Option<Vec<u8>>> = vec![None; wanted.len()];
    let mut members = 0usize;
    let mut first_member = None;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        members += 1;
        let member = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => return Err(corrupt(e)),
        };
        let member = printable(member.strip_prefix("./").unwrap_or(&member), 120);
        if first_member.is_none() {
            first_member = Some(member.clone());
        }
        let Some(slot) = wanted.iter().position(|w| *w == member) else {
            continue;
        };
        if !entry.header().entry_type().is_file() {
            bail!(
                "{name}: member {member} is not a regular file (tar entry type {:?})",
                entry.header().entry_type()
            );
        }
        let size = entry.size();
        let mut b = Vec::with_capacity(size.min(PREALLOC_MAX) as usize);
        entry.read_to_end(&mut b).map_err(corrupt)?;
        if b.len() as u64 != size {
            bail!(
                "{name}: member {member} truncated ({} of {size} bytes)",
                b.len()
            );
        }
        found[slot] = Some(b);
    }
    // read what follows the end-of-archive blocks, so that the gzip
    // trailer (CRC and length) is checked too
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    if let Some(i) = found.iter().position(Option::is_none) {
        let seen = match (members, first_member) {
            (0, _) | (_, None) => "it holds no members".to_string(),
            (n, Some(f)) => format!("it holds {n} members, the first {f}"),
        };
        bail!(
            "{name}: missing member {} (expected the {} archive {archive_name}; {seen})",
            wanted[i],
            fmt.title()
        );
    }
    let mut train = Raw::default();
    let mut test = Raw::default();
    for (i, b) in found.into_iter().enumerate() {
        let b = b.unwrap_or_default();
        let dst = if i + 1 == wanted.len() {
            &mut test
        } else {
            &mut train
        };
        parse(&b, &format!("{name}: {}", wanted[i]), fmt, dst)?;
    }
    Ok((train, test))
}
