//! Mutation fuzzing of every file loader: valid files of each format
//! (MNIST IDX, CIFAR-10/100 binaries, their `.tar`/`.tar.gz` archives, CSV;
//! raw and gzipped) are mutated at random, by byte flips, truncations,
//! extensions, insertions and deletions, and by format-aware edits of
//! headers, labels, tar header fields (with and without a valid checksum),
//! gzip headers and trailers, and CSV fields. Each mutated file is loaded
//! through [`fdgr::data::load`], which must return either a consistent
//! data set or an error of one printable line naming the file (or, for errors about
//! the data set as a whole, the `--data` spec that holds it), and never
//! panic.
//!
//! Seeded and bounded: a few thousand files in a few seconds. Set
//! `FDGR_FUZZ_SCALE=N` to run N times as many (with other seeds for N > 1).
//! A failing input is kept in the temporary directory named in the report.

mod common;

use common::*;
use fdgr::data::{load, DataOptions, Dataset, Normalize};
use fdgr_kernel::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `FDGR_FUZZ_SCALE`, 1 when unset.
fn scale() -> u64 {
    std::env::var("FDGR_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1)
}

/// How many mutated files each test loads: `base × FDGR_FUZZ_SCALE`.
fn cases(base: usize) -> usize {
    base * scale() as usize
}

/// The generator's seed: `base`, or another per scale above 1.
fn seed(base: u64) -> u64 {
    match scale() {
        1 => base,
        s => base ^ s.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

/// A file to mutate, the files it goes with, and how to load it.
struct Target {
    /// What it is, for the report.
    label: &'static str,
    /// The mutated file's name in the target's directory.
    file: &'static str,
    /// Its valid contents (uncompressed).
    plain: Vec<u8>,
    /// Written gzipped (mutations go to the plain bytes or to the gzip).
    gz: bool,
    /// Other files in the directory, written as they are.
    others: Vec<(&'static str, Vec<u8>)>,
    /// The `--data` spec, from the directory.
    spec: fn(&Path) -> String,
    /// Format-aware edit of the plain bytes; returns what it did.
    edit: fn(&mut Vec<u8>, &mut Rng) -> String,
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// One mutation at the byte level.
fn mutate_bytes(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    let n = b.len();
    let at = |rng: &mut Rng| if n == 0 { 0 } else { rng.below(n) };
    match rng.below(7) {
        0 if n > 0 => {
            let k = 1 + rng.below(8);
            for _ in 0..k {
                let i = at(rng);
                b[i] ^= 1 + rng.below(255) as u8;
            }
            format!("flip {k} bytes")
        }
        1 if n > 0 => {
            let i = at(rng);
            b[i] = pick(
                rng,
                &[0, 1, 0x7f, 0x80, 0xff, b'0', b',', b'\n', 9, 10, 99, 100],
            );
            format!("set byte {i} to {}", b[i])
        }
        2 => {
            let keep = match rng.below(4) {
                0 => rng.below(n.min(600) + 1),
                1 => n.saturating_sub(1 + rng.below(16)),
                _ => rng.below(n + 1),
            };
            b.truncate(keep);
            format!("truncate to {keep}")
        }
        3 => {
            let k = match rng.below(3) {
                0 => 1,
                1 => 1 + rng.below(600),
                _ => 512 * (1 + rng.below(4)),
            };
            if rng.below(2) == 0 || n == 0 {
                b.extend(random_bytes(rng, k));
                format!("append {k} random bytes")
            } else {
                let from = n - k.min(n);
                let tail = b[from..].to_vec();
                b.extend(tail);
                format!("repeat the last {} bytes", k.min(n))
            }
        }
        4 => {
            let i = at(rng);
            let k = 1 + rng.below(64);
            let ins = random_bytes(rng, k);
            b.splice(i..i, ins);
            format!("insert {k} bytes at {i}")
        }
        5 if n > 0 => {
            let i = at(rng);
            let k = (1 + rng.below(64)).min(n - i);
            b.drain(i..i + k);
            format!("delete {k} bytes at {i}")
        }
        _ if n > 0 => {
            let (i, j) = (at(rng), at(rng));
            b.swap(i, j);
            format!("swap bytes {i} and {j}")
        }
        _ => {
            b.push(rng.next_u64() as u8);
            "append 1 byte".into()
        }
    }
}

/// Edits of an IDX header: magic, element type, rank, dimensions.
fn edit_idx(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    if b.len() < 8 {
        return mutate_bytes(b, rng);
    }
    match rng.below(4) {
        0 => {
            let i = rng.below(4);
            b[i] = pick(rng, &[0, 1, 2, 3, 4, 8, 9, 0x0d, 0xff]);
            format!("magic byte {i} = {}", b[i])
        }
        _ => {
            let rank = (b[3] as usize).min((b.len() - 4) / 4).max(1);
            let d = rng.below(rank);
            let old = u32::from_be_bytes([b[4 + 4 * d], b[5 + 4 * d], b[6 + 4 * d], b[7 + 4 * d]]);
            let new = match rng.below(8) {
                0 => 0,
                1 => old.wrapping_add(1),
                2 => old.wrapping_sub(1),
                3 => u32::MAX,
                4 => 0x0001_0000,
                5 => old.wrapping_mul(2),
                6 => old / 2,
                _ => rng.next_u64() as u32,
            };
            b[4 + 4 * d..8 + 4 * d].copy_from_slice(&new.to_be_bytes());
            format!("dimension {d}: {old} -> {new}")
        }
    }
}

fn edit_label(b: &mut [u8], rng: &mut Rng, record: usize, label_bytes: usize) -> String {
    if b.len() < record {
        return "none".into();
    }
    let r = rng.below(b.len() / record);
    let k = rng.below(label_bytes);
    let any = rng.next_u64() as u8;
    let v = pick(rng, &[0, 9, 10, 19, 20, 99, 100, 255, any]);
    b[r * record + k] = v;
    format!("record {r} label byte {k} = {v}")
}

fn edit_cifar10(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    if rng.below(3) == 0 {
        return mutate_bytes(b, rng);
    }
    edit_label(b, rng, 3073, 1)
}

fn edit_cifar100(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    if rng.below(3) == 0 {
        return mutate_bytes(b, rng);
    }
    edit_label(b, rng, 3074, 2)
}

/// Offsets of the ustar header blocks in a tar.
fn tar_headers(b: &[u8]) -> Vec<usize> {
    (0..b.len() / 512)
        .map(|i| i * 512)
        .filter(|&o| o + 512 <= b.len() && &b[o + TAR_MAGIC..o + TAR_MAGIC + 5] == b"ustar")
        .collect()
}

/// The largest size in the ustar size field's 11 octal digits.
const MAX_OCTAL: u64 = (1 << 33) - 1;

/// Edits of tar structure: header fields (name, size, type, checksum,
/// magic), the end-of-archive blocks, member data (labels); checksums
/// mostly fixed so that the edit reaches past the header check.
fn edit_tar(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    let heads = tar_headers(b);
    if heads.is_empty() || rng.below(8) == 0 {
        return mutate_bytes(b, rng);
    }
    let h = pick(rng, &heads);
    let size = std::str::from_utf8(&b[h + TAR_SIZE..h + TAR_SIZE + 11])
        .ok()
        .and_then(|s| u64::from_str_radix(s, 8).ok())
        .unwrap_or(0);
    let what = match rng.below(9) {
        0 => {
            // name: one byte, or another member's name (a duplicate)
            if rng.below(2) == 0 {
                let i = rng.below(100);
                b[h + i] = pick(rng, &[0, b'/', b'.', b'x', 0xff]);
                format!("name byte {i} of header at {h}")
            } else {
                let o = pick(rng, &heads);
                let name = b[o..o + 100].to_vec();
                b[h..h + 100].copy_from_slice(&name);
                format!("name of header at {h} = that at {o}")
            }
        }
        1..=3 => {
            let new = match rng.below(7) {
                0 => 0,
                1 => size + 1,
                2 => size.saturating_sub(1),
                3 => size + 512,
                4 => size.saturating_sub(512),
                5 => MAX_OCTAL,
                _ => rng.next_u64() % (MAX_OCTAL + 1),
            };
            if rng.below(5) == 0 {
                // GNU base-256: high bit set, big-endian binary
                let mut f = [0u8; 12];
                f[0] = 0x80;
                f[4..].copy_from_slice(&(new | (rng.below(2) as u64) << 62).to_be_bytes());
                b[h + TAR_SIZE..h + TAR_SIZE + 12].copy_from_slice(&f);
                format!("size of header at {h}: {size} -> base-256 {new}")
            } else {
                b[h + TAR_SIZE..h + TAR_SIZE + 12]
                    .copy_from_slice(format!("{:011o}\0", new.min(MAX_OCTAL)).as_bytes());
                format!("size of header at {h}: {size} -> {new}")
            }
        }
        4 => {
            let t = pick(rng, b"0125LKxgS7\0Z");
            b[h + TAR_TYPE] = t;
            format!("type of header at {h} = {}", t as char)
        }
        5 => {
            let i = TAR_MAGIC + rng.below(8);
            b[h + i] ^= 1 + rng.below(255) as u8;
            format!("magic byte {i} of header at {h}")
        }
        6 => {
            // member data: a label byte of the first record
            let i = h + 512 + rng.below(2);
            if i < b.len() {
                b[i] = pick(rng, &[10, 20, 100, 255]);
            }
            format!("data byte {i}")
        }
        7 => {
            // numeric fields with garbage: mode, uid, gid, mtime
            let i = pick(rng, &[100usize, 108, 116, 136]) + rng.below(8);
            b[h + i] = pick(rng, &[b'9', b' ', 0, 0xff, b'x']);
            format!("numeric field byte {i} of header at {h}")
        }
        _ => {
            // no end-of-archive blocks, or garbage after them
            let end = heads.last().copied().unwrap_or(0) + 512;
            let end = end + size.min(b.len() as u64) as usize;
            let end = end.div_ceil(512) * 512;
            if rng.below(2) == 0 && end <= b.len() {
                b.truncate(end);
                format!("cut at {end}, the end blocks gone")
            } else {
                let k = 1 + rng.below(1024);
                b.extend(random_bytes(rng, k));
                format!("{k} bytes of garbage after the end")
            }
        }
    };
    if rng.below(4) != 0 {
        tar_fix_checksum(&mut b[h..h + 512]);
        format!("{what}, checksum fixed")
    } else {
        what
    }
}

/// Edits of CSV text: fields, separators, lines, encodings.
fn edit_csv(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    let commas: Vec<usize> = (0..b.len()).filter(|&i| b[i] == b',').collect();
    let lines: Vec<usize> = (0..b.len()).filter(|&i| b[i] == b'\n').collect();
    match rng.below(7) {
        0 | 1 if !commas.is_empty() => {
            let i = pick(rng, &commas) + 1;
            let j = (i..b.len())
                .find(|&j| b[j] == b',' || b[j] == b'\n')
                .unwrap_or(b.len());
            let v = pick(
                rng,
                &[
                    "nan",
                    "inf",
                    "-inf",
                    "-1",
                    "1e39",
                    "",
                    "0x10",
                    "1.5",
                    "99999999999",
                    "4294967296",
                    "65535",
                    "65536",
                    " 7 ",
                    "\u{e9}",
                    "\"3\"",
                    "1,2",
                ],
            );
            b.splice(i..j, v.bytes());
            format!("field at {i} = {v:?}")
        }
        2 if !lines.is_empty() => {
            let i = pick(rng, &lines);
            let s = pick(
                rng,
                &[&b"\r\n"[..], b"\n\n", b",", b"", b"\n1,2\n", b"\na,b,c\n"],
            );
            b.splice(i..i + 1, s.iter().copied());
            format!("newline at {i} -> {s:?}")
        }
        3 => {
            let p = pick(
                rng,
                &[
                    &b"\xef\xbb\xbf"[..],
                    b"x,y,label\n",
                    b"\n\n",
                    b"#\n",
                    b"\xff",
                ],
            );
            b.splice(0..0, p.iter().copied());
            format!("prefix {p:?}")
        }
        4 if !commas.is_empty() => {
            let i = pick(rng, &commas);
            b.remove(i);
            format!("remove comma at {i}")
        }
        _ => mutate_bytes(b, rng),
    }
}

/// Edits of a gzip stream: header fields, flags, trailer, extra members.
fn edit_gz(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    let n = b.len();
    if n < 18 {
        return mutate_bytes(b, rng);
    }
    match rng.below(5) {
        0 => {
            let i = rng.below(10);
            b[i] ^= 1 + rng.below(255) as u8;
            format!("gzip header byte {i}")
        }
        1 => {
            // FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT without their fields
            let f = 1u8 << rng.below(5);
            b[3] |= f;
            format!("gzip flag {f:#x}")
        }
        2 => {
            let i = n - 1 - rng.below(8);
            b[i] ^= 1 + rng.below(255) as u8;
            format!("gzip trailer byte {i}")
        }
        3 => {
            let k = 1 + rng.below(40);
            b.extend(random_bytes(rng, k));
            format!("{k} bytes after the gzip stream")
        }
        _ => {
            // a second member, as in concatenated gzip files
            let k = 1 + rng.below(100);
            b.extend(gz(&random_bytes(rng, k)));
            "a second gzip member".into()
        }
    }
}

/// What one load must give: a consistent data set, or one line naming
/// the mutated file or the spec.
fn check(
    ds: &std::thread::Result<anyhow::Result<Dataset>>,
    file: &Path,
    spec: &str,
) -> Result<bool, String> {
    match ds {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
        Ok(Err(e)) => {
            let e = e.to_string();
            let file = file.display().to_string();
            if e.chars().any(char::is_control) {
                Err(format!("error not one printable line: {e:?}"))
            } else if !(e.contains(&file) || e.starts_with(spec)) {
                Err(format!("error names neither {file} nor the spec: {e}"))
            } else {
                Ok(false)
            }
        }
        Ok(Ok(d)) => {
            let f = d.dims.0 * d.dims.1 * d.dims.2;
            let fine = d.features == f
                && f > 0
                && !d.train.is_empty()
                && !d.test.is_empty()
                && d.train.x.len() == d.train.len() * f
                && d.test.x.len() == d.test.len() * f
                && d.train
                    .y
                    .iter()
                    .chain(&d.test.y)
                    .all(|&y| (y as usize) < d.classes)
                && d.train.x.iter().chain(&d.test.x).all(|v| v.is_finite());
            if fine {
                Ok(true)
            } else {
                Err(format!(
                    "inconsistent data set: dims {:?}, features {}, classes {}, {} / {} samples",
                    d.dims,
                    d.features,
                    d.classes,
                    d.train.len(),
                    d.test.len()
                ))
            }
        }
    }
}

/// Loads `n` mutants spread over `targets`; panics listing every failure.
fn fuzz(name: &str, targets: &[Target], n: usize, seed: u64) {
    let t0 = Instant::now();
    let root = dir(&format!("fuzz-{name}"));
    let mut rng = Rng::new(seed);
    let mut failures = vec![];
    let (mut oks, mut errs) = (vec![0usize; targets.len()], vec![0usize; targets.len()]);
    let dirs: Vec<PathBuf> = (0..targets.len())
        .map(|k| {
            let d = root.join(k.to_string());
            std::fs::create_dir_all(&d).unwrap();
            for (f, b) in &targets[k].others {
                write(&d.join(f), b);
            }
            d
        })
        .collect();
    // the unmutated files load: the mutants start from valid input
    for (k, t) in targets.iter().enumerate() {
        let b = if t.gz { gz(&t.plain) } else { t.plain.clone() };
        write(&dirs[k].join(t.file), &b);
        let spec = (t.spec)(&dirs[k]);
        if let Err(e) = load(&spec, &DataOptions::default()) {
            panic!("{}: the valid file does not load: {e:#}", t.label);
        }
    }
    for case in 0..n {
        let k = case % targets.len();
        let t = &targets[k];
        let mut b = t.plain.clone();
        let mut log = vec![];
        let (gz_level, rounds) = (t.gz && rng.below(3) == 0, 1 + rng.below(3));
        for _ in 0..rounds {
            let edit = rng.below(2) == 0;
            log.push(if edit {
                (t.edit)(&mut b, &mut rng)
            } else {
                mutate_bytes(&mut b, &mut rng)
            });
        }
        if t.gz {
            b = gz(&b);
            if gz_level {
                log.push(if rng.below(2) == 0 {
                    edit_gz(&mut b, &mut rng)
                } else {
                    mutate_bytes(&mut b, &mut rng)
                });
            }
        }
        let file = dirs[k].join(t.file);
        write(&file, &b);
        let spec = (t.spec)(&dirs[k]);
        let normalize = pick(
            &mut rng,
            &[Normalize::Auto, Normalize::Channel, Normalize::Standard],
        );
        let opt = DataOptions {
            normalize,
            ..Default::default()
        };
        let got = catch_unwind(AssertUnwindSafe(|| load(&spec, &opt)));
        match check(&got, &file, &spec) {
            Ok(true) => oks[k] += 1,
            Ok(false) => errs[k] += 1,
            Err(why) => {
                let keep = root.join(format!("failure-{case}-{}", t.file));
                write(&keep, &b);
                failures.push(format!(
                    "case {case} ({}; {}): {why}; input kept at {}",
                    t.label,
                    log.join("; "),
                    keep.display()
                ));
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    for (k, t) in targets.iter().enumerate() {
        eprintln!(
            "{name}: {}: {} loaded, {} rejected",
            t.label, oks[k], errs[k]
        );
    }
    eprintln!("{name}: {n} mutated files in {secs:.2} s");
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // the mutations bite, and not every one fatally
    for (k, t) in targets.iter().enumerate() {
        assert!(errs[k] > 0, "{}: no mutant was rejected", t.label);
        assert!(oks[k] > 0, "{}: no mutant loaded", t.label);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// 15 images of 4×5 pixels, 5 of each of 3 classes: the stratified split
/// holds out one of each.
fn idx_images() -> Vec<u8> {
    idx(
        &[15, 4, 5],
        &(0..300).map(|i| (i * 13 % 256) as u8).collect::<Vec<_>>(),
    )
}

fn idx_labels() -> Vec<u8> {
    idx(&[15], &(0..15).map(|i| i % 3).collect::<Vec<u8>>())
}

fn spec_idx_pair(d: &Path) -> String {
    format!(
        "idx:{},{}",
        d.join("images").display(),
        d.join("labels").display()
    )
}

fn spec_idx_pair_gz(d: &Path) -> String {
    format!(
        "idx:{},{}",
        d.join("images.gz").display(),
        d.join("labels.gz").display()
    )
}

fn spec_mnist(d: &Path) -> String {
    format!("mnist:{}", d.display())
}

#[test]
fn idx_and_mnist_files() {
    let mnist = [
        ("train-images-idx3-ubyte", idx_images()),
        ("train-labels-idx1-ubyte", idx_labels()),
        ("t10k-images-idx3-ubyte", idx(&[2, 4, 5], &[7; 40])),
        ("t10k-labels-idx1-ubyte", idx(&[2], &[2, 1])),
    ];
    let mut targets = vec![
        Target {
            label: "IDX images",
            file: "images",
            plain: idx_images(),
            gz: false,
            others: vec![("labels", idx_labels())],
            spec: spec_idx_pair,
            edit: edit_idx,
        },
        Target {
            label: "IDX labels",
            file: "labels",
            plain: idx_labels(),
            gz: false,
            others: vec![("images", idx_images())],
            spec: spec_idx_pair,
            edit: edit_idx,
        },
        Target {
            label: "IDX images .gz",
            file: "images.gz",
            plain: idx_images(),
            gz: true,
            others: vec![("labels.gz", gz(&idx_labels()))],
            spec: spec_idx_pair_gz,
            edit: edit_idx,
        },
    ];
    for (i, (f, b)) in mnist.iter().enumerate() {
        targets.push(Target {
            label: f,
            file: f,
            plain: b.clone(),
            gz: false,
            others: mnist
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (g, c))| (*g, c.clone()))
                .collect(),
            spec: spec_mnist,
            edit: edit_idx,
        });
    }
    fuzz("idx", &targets, cases(1400), seed(1));
}

fn cifar10_file(labels: &[u8]) -> Vec<u8> {
    labels
        .iter()
        .enumerate()
        .flat_map(|(k, &l)| cifar10_record(l, &cifar_pixels(k as u8)))
        .collect()
}

fn cifar100_file(labels: &[(u8, u8)]) -> Vec<u8> {
    labels
        .iter()
        .enumerate()
        .flat_map(|(k, &(c, f))| cifar100_record(c, f, &cifar_pixels(k as u8)))
        .collect()
}

fn cifar10_batches() -> [Vec<u8>; 6] {
    std::array::from_fn(|i| cifar10_file(&[i as u8, 9 - i as u8]))
}

#[test]
fn cifar_binary_files() {
    let batches = cifar10_batches();
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    // the directory's data_batch_3.bin is the one mutated
    let dir_others: Vec<(&'static str, Vec<u8>)> = (0..6)
        .filter(|&i| i != 2)
        .map(|i| (names[i], batches[i].clone()))
        .collect();
    let c10 = cifar10_file(&[0, 1, 1, 0, 0, 1]);
    let c100 = cifar100_file(&[(0, 5), (1, 7), (1, 7), (0, 5), (0, 5), (1, 7)]);
    let targets = vec![
        Target {
            label: "CIFAR-10 .bin",
            file: "batch.bin",
            plain: c10.clone(),
            gz: false,
            others: vec![],
            spec: |d| format!("cifar10:{}", d.join("batch.bin").display()),
            edit: edit_cifar10,
        },
        Target {
            label: "CIFAR-10 .bin.gz",
            file: "batch.bin.gz",
            plain: c10,
            gz: true,
            others: vec![],
            spec: |d| format!("cifar10:{}", d.join("batch.bin.gz").display()),
            edit: edit_cifar10,
        },
        Target {
            label: "CIFAR-10 directory",
            file: "data_batch_3.bin",
            plain: batches[2].clone(),
            gz: false,
            others: dir_others,
            spec: |d| format!("cifar10:{}", d.display()),
            edit: edit_cifar10,
        },
        Target {
            label: "CIFAR-100 .bin",
            file: "train.bin",
            plain: c100.clone(),
            gz: false,
            others: vec![],
            spec: |d| format!("cifar100:{}", d.join("train.bin").display()),
            edit: edit_cifar100,
        },
        Target {
            label: "CIFAR-100 coarse .bin.gz",
            file: "train.bin.gz",
            plain: c100.clone(),
            gz: true,
            others: vec![],
            spec: |d| format!("cifar100-coarse:{}", d.join("train.bin.gz").display()),
            edit: edit_cifar100,
        },
        Target {
            label: "CIFAR-100 directory",
            file: "test.bin",
            plain: cifar100_file(&[(1, 7), (0, 5)]),
            gz: false,
            others: vec![("train.bin", c100)],
            spec: |d| format!("cifar100:{}", d.display()),
            edit: edit_cifar100,
        },
    ];
    fuzz("cifar-bin", &targets, cases(900), seed(2));
}

#[test]
fn cifar_archives() {
    let b10 = cifar10_batches();
    let t10 = cifar10_tar(&b10, [3, 0, 1, 2, 4, 5]);
    let t100 = cifar100_tar(
        &cifar100_file(&[(0, 5), (1, 7), (3, 99)]),
        &cifar100_file(&[(1, 7)]),
    );
    let targets = vec![
        Target {
            label: "cifar-10-binary.tar.gz",
            file: "cifar-10-binary.tar.gz",
            plain: t10.clone(),
            gz: true,
            others: vec![],
            spec: |d| format!("cifar10:{}", d.join("cifar-10-binary.tar.gz").display()),
            edit: edit_tar,
        },
        Target {
            label: "CIFAR-10 .tar",
            file: "cifar-10-binary.tar",
            plain: t10,
            gz: false,
            others: vec![],
            spec: |d| format!("cifar10:{}", d.join("cifar-10-binary.tar").display()),
            edit: edit_tar,
        },
        Target {
            label: "cifar-100-binary.tar.gz",
            file: "cifar-100-binary.tar.gz",
            plain: t100.clone(),
            gz: true,
            others: vec![],
            spec: |d| format!("cifar100:{}", d.join("cifar-100-binary.tar.gz").display()),
            edit: edit_tar,
        },
        Target {
            label: "CIFAR-100 .tgz, coarse",
            file: "c100.tgz",
            plain: t100,
            gz: true,
            others: vec![],
            spec: |d| format!("cifar100-coarse:{}", d.join("c100.tgz").display()),
            edit: edit_tar,
        },
    ];
    fuzz("cifar-archive", &targets, cases(1200), seed(3));
}

#[test]
fn csv_files() {
    let mut text = String::from("f1,f2,f3,label\n");
    for i in 0..24 {
        text.push_str(&format!("{},{}.5,-{},{}\n", i, i % 5, i * 7 % 11, i % 3));
    }
    let plain = text.into_bytes();
    let targets = vec![
        Target {
            label: "CSV",
            file: "t.csv",
            plain: plain.clone(),
            gz: false,
            others: vec![],
            spec: |d| format!("csv:{}", d.join("t.csv").display()),
            edit: edit_csv,
        },
        Target {
            label: "CSV .gz",
            file: "t.csv.gz",
            plain,
            gz: true,
            others: vec![],
            spec: |d| format!("csv:{}", d.join("t.csv.gz").display()),
            edit: edit_csv,
        },
    ];
    fuzz("csv", &targets, cases(1000), seed(4));
}

/// Every file of the bad-input corpus (`tests/corpus`, see its
/// `make_corpus.py`) through every loader, whatever format it was made
/// for.
#[test]
fn corpus_through_every_loader() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} corpus files", files.len());
    let (good_images, good_labels) = (
        corpus.join("idx-good-images"),
        corpus.join("idx-good-labels"),
    );
    let mut failures = vec![];
    let mut loads = 0;
    for f in &files {
        let p = f.display().to_string();
        let specs = [
            format!("csv:{p}"),
            format!("cifar10:{p}"),
            format!("cifar100:{p}"),
            format!("cifar100-coarse:{p}"),
            format!("idx:{p},{}", good_labels.display()),
            format!("idx:{},{p}", good_images.display()),
            format!("mnist:{p}"),
        ];
        for spec in &specs {
            for normalize in [Normalize::Auto, Normalize::Channel] {
                let opt = DataOptions {
                    normalize,
                    test_frac: 0.34,
                    ..Default::default()
                };
                let got = catch_unwind(AssertUnwindSafe(|| load(spec, &opt)));
                loads += 1;
                if let Err(why) = check(&got, f, spec) {
                    failures.push(format!("{spec}: {why}"));
                }
            }
        }
    }
    eprintln!("corpus: {} files, {loads} loads", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
