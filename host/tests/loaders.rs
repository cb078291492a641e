//! The loaders on well-formed files of each format, written here byte by
//! byte from the format specifications (`common/mod.rs`): MNIST IDX,
//! CIFAR-10 and CIFAR-100 binaries and their distributed `.tar.gz`
//! archives, CSV; shapes, labels, splits and normalisation.

mod common;

use common::*;
use fdgr::data::{load, DataOptions, Dataset, Normalize};
use std::path::Path;

#[test]
fn mnist_idx_directory_raw_and_gzip() {
    let d = dir("mnist");
    // 4 training images of 2×3 pixels, 2 test images; labels 0..2
    let train: Vec<u8> = (0..24).map(|i| (i * 10) as u8).collect();
    write(
        &d.join("train-images-idx3-ubyte.gz"),
        &gz(&idx(&[4, 2, 3], &train)),
    );
    write(
        &d.join("train-labels-idx1-ubyte"),
        &idx(&[4], &[0, 1, 2, 1]),
    );
    write(
        &d.join("t10k-images-idx3-ubyte"),
        &idx(&[2, 2, 3], &[255; 12]),
    );
    write(
        &d.join("t10k-labels-idx1-ubyte.gz"),
        &gz(&idx(&[2], &[2, 0])),
    );
    let ds = load(&format!("mnist:{}", d.display()), &DataOptions::default()).unwrap();
    assert_eq!((ds.features, ds.classes), (6, 3));
    assert_eq!(ds.dims, (1, 2, 3), "the IDX header's rows x cols");
    assert_eq!(ds.train.y, vec![0, 1, 2, 1]);
    assert_eq!(ds.test.y, vec![2, 0]);
    assert_eq!(ds.train.x[1], 10.0 / 255.0);
    assert!(ds.test.x.iter().all(|&v| v == 1.0));
    // a single IDX pair is split stratified
    let ds = load(
        &format!(
            "idx:{},{}",
            d.join("train-images-idx3-ubyte.gz").display(),
            d.join("train-labels-idx1-ubyte").display()
        ),
        &DataOptions {
            test_frac: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ds.train.len() + ds.test.len(), 4);
}

#[test]
fn cifar10_batches() {
    let d = dir("cifar");
    let rec = |label: u8, v: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(v, 3072));
        r
    };
    for i in 1..=5u8 {
        write(
            &d.join(format!("data_batch_{i}.bin")),
            &[rec(i, i), rec(9, 0)].concat(),
        );
    }
    write(&d.join("test_batch.bin"), &rec(3, 255));
    let ds = load(&format!("cifar10:{}", d.display()), &DataOptions::default()).unwrap();
    assert_eq!((ds.features, ds.classes), (3072, 10));
    assert_eq!(ds.dims, (3, 32, 32));
    assert_eq!(ds.train.len(), 10);
    assert_eq!(ds.train.y[..4], [1, 9, 2, 9]);
    assert_eq!(ds.test.y, vec![3]);
    assert_eq!(ds.train.x[0], 1.0 / 255.0);
    assert_eq!(ds.test.x[3071], 1.0);
}

#[test]
fn csv_standardised_with_training_statistics() {
    let d = dir("csv");
    let mut text = String::from("f1,f2,label\n");
    for i in 0..40 {
        text.push_str(&format!("{},{},{}\n", i, 100 + 2 * (i % 5), i % 2));
    }
    write(&d.join("t.csv.gz"), &gz(text.as_bytes()));
    let ds = load(
        &format!("csv:{}", d.join("t.csv.gz").display()),
        &DataOptions::default(),
    )
    .unwrap();
    assert_eq!((ds.features, ds.classes), (2, 2));
    assert_eq!(ds.dims, (2, 1, 1));
    assert_eq!(ds.train.len(), 32);
    let n = ds.train.len() as f32;
    let mean: f32 = ds.train.x.iter().step_by(2).sum::<f32>() / n;
    let var: f32 = ds
        .train
        .x
        .iter()
        .step_by(2)
        .map(|v| (v - mean) * (v - mean))
        .sum::<f32>()
        / n;
    assert!(
        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
        "{mean} {var}"
    );
    assert!(ds.notes.iter().any(|n| n.contains("standardised")));
    let raw = load(
        &format!("csv:{}", d.join("t.csv.gz").display()),
        &DataOptions {
            normalize: Normalize::None,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(raw.train.x.iter().any(|&v| v >= 100.0));
}

fn opts(normalize: Normalize) -> DataOptions {
    DataOptions {
        normalize,
        ..Default::default()
    }
}

fn load_ok(spec: &str, normalize: Normalize) -> Dataset {
    load(spec, &opts(normalize)).unwrap_or_else(|e| panic!("{spec}: {e:#}"))
}

fn load_err(spec: &str) -> String {
    match load(spec, &DataOptions::default()) {
        Ok(_) => panic!("{spec}: loaded, expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(e: &str, needles: &[&str]) {
    for n in needles {
        assert!(e.contains(n), "'{n}' missing from: {e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }
}

/// Six CIFAR-10 batches: batch i holds labels i and 9 − i; the test batch
/// labels 3, 7, 0. Every record's pixels differ.
fn synthetic_cifar10_batches() -> [Vec<u8>; 6] {
    std::array::from_fn(|i| {
        let labels: &[u8] = if i < 5 {
            &[i as u8, 9 - i as u8]
        } else {
            &[3, 7, 0]
        };
        labels
            .iter()
            .enumerate()
            .flat_map(|(k, &l)| cifar10_record(l, &cifar_pixels((3 * i + k) as u8)))
            .collect()
    })
}

#[test]
fn cifar10_archive_matches_the_directory_and_keeps_channel_planes() {
    let d = dir("cifar10-archive");
    let batches = synthetic_cifar10_batches();
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    let bin = d.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (n, b) in names.iter().zip(&batches) {
        write(&bin.join(n), b);
    }
    // members out of order, as the archive need not sort them
    let t = cifar10_tar(&batches, [5, 2, 0, 4, 1, 3]);
    write(&d.join("cifar-10-binary.tar.gz"), &gz(&t));
    write(&d.join("cifar-10-binary.tar"), &t);
    write(&d.join("c10.tgz"), &gz(&t));
    let from_dir = load_ok(&format!("cifar10:{}", bin.display()), Normalize::Auto);
    assert_eq!(from_dir.dims, (3, 32, 32));
    assert_eq!((from_dir.features, from_dir.classes), (3072, 10));
    assert_eq!(from_dir.train.y, [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]);
    assert_eq!(from_dir.test.y, [3, 7, 0]);
    // sample 0 is the file's record 0, pixel for pixel: R, G, B planes
    let px = cifar_pixels(0);
    for (k, &p) in px.iter().enumerate() {
        assert_eq!(from_dir.train.x[k], p as f32 / 255.0, "pixel {k}");
    }
    assert_eq!(
        from_dir.train.x[5 * 3072 + 1024],
        cifar_pixels(7)[1024] as f32 / 255.0
    );
    for f in ["cifar-10-binary.tar.gz", "cifar-10-binary.tar", "c10.tgz"] {
        let a = load_ok(&format!("cifar10:{}", d.join(f).display()), Normalize::Auto);
        assert_eq!(a.dims, (3, 32, 32), "{f}");
        assert_eq!(
            (&a.train.y, &a.test.y),
            (&from_dir.train.y, &from_dir.test.y),
            "{f}"
        );
        assert_eq!(a.train.x, from_dir.train.x, "{f}");
        assert_eq!(a.test.x, from_dir.test.x, "{f}");
        assert!(
            a.notes[0].contains("archive") && a.notes[0].contains("3x32x32"),
            "{:?}",
            a.notes
        );
    }
    // one batch file: the format's 10 classes, stratified split
    let recs: Vec<u8> = [1u8, 1, 2, 2]
        .iter()
        .flat_map(|&l| cifar10_record(l, &cifar_pixels(l)))
        .collect();
    write(&d.join("one.bin"), &recs);
    let one = load(
        &format!("cifar10:{}", d.join("one.bin").display()),
        &DataOptions {
            test_frac: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (one.classes, one.dims, one.train.len(), one.test.len()),
        (10, (3, 32, 32), 2, 2)
    );
}

/// CIFAR-100 records: (coarse, fine) label pairs with distinct pixels.
fn cifar100_file(labels: &[(u8, u8)], seed: u8) -> Vec<u8> {
    labels
        .iter()
        .enumerate()
        .flat_map(|(k, &(c, f))| cifar100_record(c, f, &cifar_pixels(seed + k as u8)))
        .collect()
}

#[test]
fn cifar100_fine_and_coarse_from_files_and_archives() {
    let d = dir("cifar100");
    let train = cifar100_file(&[(4, 0), (19, 99), (4, 55), (0, 30), (19, 99)], 0);
    let test = cifar100_file(&[(7, 1), (0, 98)], 20);
    let bin = d.join("cifar-100-binary");
    std::fs::create_dir_all(&bin).unwrap();
    write(&bin.join("train.bin"), &train);
    write(&bin.join("test.bin.gz"), &gz(&test));
    let t = cifar100_tar(&train, &test);
    write(&d.join("cifar-100-binary.tar.gz"), &gz(&t));
    write(&d.join("cifar-100-binary.tar"), &t);
    let specs = [
        format!("{}", bin.display()),
        format!("{}", d.join("cifar-100-binary.tar.gz").display()),
        format!("{}", d.join("cifar-100-binary.tar").display()),
    ];
    for s in &specs {
        let fine = load_ok(&format!("cifar100:{s}"), Normalize::Auto);
        assert_eq!(
            (fine.dims, fine.features, fine.classes),
            ((3, 32, 32), 3072, 100),
            "{s}"
        );
        assert_eq!(fine.train.y, [0, 99, 55, 30, 99], "{s}");
        assert_eq!(fine.test.y, [1, 98], "{s}");
        assert_eq!(
            fine.train.x[3072 + 2048],
            cifar_pixels(1)[2048] as f32 / 255.0
        );
        assert_eq!(fine.test.x[0], cifar_pixels(20)[0] as f32 / 255.0);
        assert!(fine.notes[0].contains("fine labels"), "{:?}", fine.notes);
        let coarse = load_ok(&format!("cifar100-coarse:{s}"), Normalize::Auto);
        assert_eq!(coarse.classes, 20, "{s}");
        assert_eq!(coarse.train.y, [4, 19, 4, 0, 19], "{s}");
        assert_eq!(coarse.test.y, [7, 0], "{s}");
        assert_eq!(coarse.train.x, fine.train.x);
    }
    // one file, split stratified: 100 classes whatever the labels present
    let labels: Vec<(u8, u8)> = (0..10).map(|i| (i % 2, 10 + i % 2)).collect();
    write(&d.join("some.bin"), &cifar100_file(&labels, 0));
    let one = load_ok(
        &format!("cifar100:{}", d.join("some.bin").display()),
        Normalize::Auto,
    );
    assert_eq!((one.classes, one.train.len(), one.test.len()), (100, 8, 2));
    let one = load_ok(
        &format!("cifar100-coarse:{}", d.join("some.bin").display()),
        Normalize::Auto,
    );
    assert_eq!((one.classes, one.train.len(), one.test.len()), (20, 8, 2));
}

/// Per-channel mean and std (population) over all samples and pixels.
fn channel_moments(x: &[f32], (c, h, w): (usize, usize, usize)) -> Vec<(f64, f64)> {
    let plane = h * w;
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = x
                .chunks_exact(c * plane)
                .flat_map(|r| r[ch * plane..(ch + 1) * plane].iter().map(|&v| v as f64))
                .collect();
            let n = vals.len() as f64;
            let m = vals.iter().sum::<f64>() / n;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
            (m, v.sqrt())
        })
        .collect()
}

#[test]
fn channel_normalisation_uses_training_statistics_per_channel() {
    let d = dir("channel");
    let bin = d.join("b");
    std::fs::create_dir_all(&bin).unwrap();
    let batches = synthetic_cifar10_batches();
    for (i, b) in batches.iter().enumerate() {
        let n = if i < 5 {
            format!("data_batch_{}.bin", i + 1)
        } else {
            "test_batch.bin".into()
        };
        write(&bin.join(n), b);
    }
    let spec = format!("cifar10:{}", bin.display());
    let raw = load_ok(&spec, Normalize::None);
    let norm = load_ok(&spec, Normalize::Channel);
    let stats = channel_moments(&raw.train.x, raw.dims);
    // the three planes have different statistics (10.., 100.., 200..)
    assert!(
        stats[0].0 < 60.0 && stats[1].0 > 100.0 && stats[2].0 > 200.0,
        "{stats:?}"
    );
    for (m, s) in channel_moments(&norm.train.x, norm.dims) {
        assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-4, "{m} {s}");
    }
    // the test split with the training split's statistics, channel by channel
    for (i, (&r, &n)) in raw.test.x.iter().zip(&norm.test.x).enumerate() {
        let (m, s) = stats[i % 3072 / 1024];
        let want = (r as f64 - m) / s;
        assert!(
            (n as f64 - want).abs() < 1e-4,
            "test value {i}: {n} vs {want}"
        );
    }
    assert!(
        norm.notes
            .iter()
            .any(|n| n.contains("per channel") && n.contains("mean (")),
        "{:?}",
        norm.notes
    );
    // auto stays pixels / 255
    let auto = load_ok(&spec, Normalize::Auto);
    for (a, r) in auto.train.x.iter().zip(&raw.train.x) {
        assert_eq!(*a, r / 255.0);
    }
    // without channels (CSV: features x 1 x 1) channel equals standard
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!("{},{},{}\n", i * 3, 50 - i % 4, i % 3));
    }
    write(&d.join("t.csv"), text.as_bytes());
    let csv = format!("csv:{}", d.join("t.csv").display());
    let (a, b) = (
        load_ok(&csv, Normalize::Channel),
        load_ok(&csv, Normalize::Standard),
    );
    assert_eq!(a.dims, (2, 1, 1));
    for (x, y) in a
        .train
        .x
        .iter()
        .chain(&a.test.x)
        .zip(b.train.x.iter().chain(&b.test.x))
    {
        assert!((x - y).abs() < 1e-5, "{x} {y}");
    }
    // one channel (IDX): one mean and std over every pixel
    let m = dir("channel-idx");
    let px: Vec<u8> = (0..6 * 9).map(|i| (i * 37 % 256) as u8).collect();
    write(&m.join("i"), &idx(&[6, 3, 3], &px));
    write(&m.join("l"), &idx(&[6], &[0, 1, 0, 1, 0, 1]));
    let ds = load_ok(
        &format!("idx:{},{}", m.join("i").display(), m.join("l").display()),
        Normalize::Channel,
    );
    assert_eq!(ds.dims, (1, 3, 3));
    let (mean, std) = channel_moments(&ds.train.x, ds.dims)[0];
    assert!(
        mean.abs() < 1e-5 && (std - 1.0).abs() < 1e-4,
        "{mean} {std}"
    );
}

#[test]
fn cifar_errors_name_the_file_and_what_was_expected() {
    let d = dir("cifar-errors");
    let batches = synthetic_cifar10_batches();
    let p = |n: &str| d.join(n).display().to_string();
    // archive without the test batch
    let mut t = cifar10_tar(&batches, [0, 1, 2, 3, 4, 5]);
    let cut = t.windows(14).position(|w| w == b"test_batch.bin").unwrap();
    t[cut..cut + 4].copy_from_slice(b"best");
    tar_fix_checksum(&mut t[cut - 21..cut - 21 + 512]);
    write(&d.join("no-test.tar.gz"), &gz(&t));
    let e = load_err(&format!("cifar10:{}", p("no-test.tar.gz")));
    assert_mentions(
        &e,
        &[
            "no-test.tar.gz",
            "missing member cifar-10-batches-bin/test_batch.bin",
        ],
    );
    // a member of the wrong size, a label out of range
    let mut bad = batches.clone();
    bad[2].push(0);
    write(
        &d.join("size.tar.gz"),
        &gz(&cifar10_tar(&bad, [0, 1, 2, 3, 4, 5])),
    );
    let e = load_err(&format!("cifar10:{}", p("size.tar.gz")));
    assert_mentions(
        &e,
        &[
            "size.tar.gz",
            "data_batch_3.bin",
            "6147 bytes",
            "not a whole number of CIFAR-10 records",
        ],
    );
    let mut bad = batches.clone();
    bad[4][3073] = 10;
    write(
        &d.join("label.tar.gz"),
        &gz(&cifar10_tar(&bad, [0, 1, 2, 3, 4, 5])),
    );
    let e = load_err(&format!("cifar10:{}", p("label.tar.gz")));
    assert_mentions(
        &e,
        &[
            "label.tar.gz",
            "data_batch_5.bin",
            "record 1",
            "label 10 out of range (expected 0..9)",
        ],
    );
    // CIFAR-100 labels
    write(&d.join("fine.bin"), &cifar100_file(&[(1, 2), (3, 100)], 0));
    let e = load_err(&format!("cifar100:{}", p("fine.bin")));
    assert_mentions(
        &e,
        &[
            "fine.bin",
            "record 1",
            "fine label 100 out of range (expected 0..99)",
        ],
    );
    write(&d.join("coarse.bin"), &cifar100_file(&[(20, 2)], 0));
    let e = load_err(&format!("cifar100-coarse:{}", p("coarse.bin")));
    assert_mentions(
        &e,
        &[
            "coarse.bin",
            "record 0",
            "coarse label 20 out of range (expected 0..19)",
        ],
    );
    // the wrong format, with a hint; an archive not named as one
    write(&d.join("c100.bin"), &cifar100_file(&[(1, 2), (3, 4)], 0));
    let e = load_err(&format!("cifar10:{}", p("c100.bin")));
    assert_mentions(
        &e,
        &[
            "c100.bin",
            "not a whole number of CIFAR-10 records",
            "CIFAR-100",
        ],
    );
    write(&d.join("c10.bin"), &batches[0]);
    let e = load_err(&format!("cifar100:{}", p("c10.bin")));
    assert_mentions(&e, &["c10.bin", "3074 bytes", "CIFAR-10 records"]);
    write(
        &d.join("archive.bin"),
        &cifar10_tar(&batches, [0, 1, 2, 3, 4, 5]),
    );
    let e = load_err(&format!("cifar10:{}", p("archive.bin")));
    assert_mentions(&e, &["archive.bin", "tar archive"]);
    // the CIFAR-10 archive where CIFAR-100 is expected
    write(
        &d.join("c10.tar.gz"),
        &gz(&cifar10_tar(&batches, [0, 1, 2, 3, 4, 5])),
    );
    let e = load_err(&format!("cifar100:{}", p("c10.tar.gz")));
    assert_mentions(
        &e,
        &[
            "c10.tar.gz",
            "missing member cifar-100-binary/train.bin",
            "cifar-10-batches-bin/",
        ],
    );
    // truncated, corrupt, not an archive, absent
    let full = gz(&cifar10_tar(&batches, [0, 1, 2, 3, 4, 5]));
    write(&d.join("cut.tar.gz"), &full[..full.len() / 2]);
    let e = load_err(&format!("cifar10:{}", p("cut.tar.gz")));
    assert_mentions(&e, &["cut.tar.gz", "corrupt or truncated"]);
    let mut crc = full.clone();
    let n = crc.len();
    crc[n - 6] ^= 0xff; // the gzip trailer's CRC-32
    write(&d.join("crc.tar.gz"), &crc);
    let e = load_err(&format!("cifar10:{}", p("crc.tar.gz")));
    assert_mentions(&e, &["crc.tar.gz", "corrupt"]);
    write(
        &d.join("text.tar.gz"),
        b"this is not an archive at all, just some text that goes on\n",
    );
    let e = load_err(&format!("cifar10:{}", p("text.tar.gz")));
    assert_mentions(&e, &["text.tar.gz"]);
    let e = load_err(&format!("cifar10:{}", p("absent.tar.gz")));
    assert_mentions(&e, &["absent.tar.gz", "cannot read"]);
    let e = load_err(&format!("cifar100:{}", d.display()));
    assert_mentions(&e, &["missing train.bin", "CIFAR-100"]);
}

#[test]
fn corpus_cifar_files_are_rejected_clearly() {
    let c = |n: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus")
            .join(n)
            .display()
            .to_string()
    };
    let e = load_err(&format!("cifar100:{}", c("cifar100-bad-fine-label.bin")));
    assert_mentions(&e, &["cifar100-bad-fine-label.bin", "fine label 100"]);
    let e = load_err(&format!("cifar10:{}", c("cifar10-no-test.tar.gz")));
    assert_mentions(
        &e,
        &[
            "cifar10-no-test.tar.gz",
            "missing member cifar-10-batches-bin/test_batch.bin",
        ],
    );
    let e = load_err(&format!("cifar10:{}", c("cifar10-truncated.tar.gz")));
    assert_mentions(&e, &["cifar10-truncated.tar.gz", "corrupt or truncated"]);
}

/// `fdgr train` on `data` with a small MLP, writing to `out`.
fn train_cli<'a>(data: &'a str, model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--data",
        data,
        "--model",
        model,
        "--epochs",
        "1",
        "--batch",
        "8",
        "--threads",
        "1",
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

/// A CSV of `n` rows of 2 features and labels 0/1, with `header` first.
fn csv_rows(header: &str, n: usize) -> String {
    let mut t = String::from(header);
    for i in 0..n {
        t.push_str(&format!("{},{}.5,{}\n", i, i % 3, i % 2));
    }
    t
}

/// A UTF-8 byte order mark keeps every row (it once made the first row
/// look like a header, which was dropped); a header is skipped only when
/// every field of the first line is non-numeric, and said so; a first
/// row partly numeric is an error naming line 1 and the column.
#[test]
fn csv_byte_order_mark_and_header_rows() {
    let d = dir("csv-header");
    let p = |n: &str| d.join(n).display().to_string();
    let bom = format!("\u{feff}{}", csv_rows("", 20));
    write(&d.join("bom.csv"), bom.as_bytes());
    write(&d.join("bom.csv.gz"), &gz(bom.as_bytes()));
    for f in ["bom.csv", "bom.csv.gz"] {
        let ds = load_ok(&format!("csv:{}", p(f)), Normalize::None);
        assert_eq!(ds.train.len() + ds.test.len(), 20, "{f}: every row kept");
        assert!(ds.train.x.contains(&0.0) || ds.test.x.contains(&0.0));
        assert!(!ds.notes.iter().any(|n| n.contains("header row")), "{f}");
    }
    let header = format!("\u{feff}{}", csv_rows("x,y,label\n", 20));
    write(&d.join("header.csv"), header.as_bytes());
    let ds = load_ok(&format!("csv:{}", p("header.csv")), Normalize::None);
    assert_eq!(ds.train.len() + ds.test.len(), 20);
    assert!(ds.notes.iter().any(|n| n.contains("header row skipped")));
    // the CLI prints the note
    let spec = format!("csv:{}", p("header.csv"));
    let out = p("header-run");
    let o = run(&train_cli(&spec, "2-4-2", &out, &[]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "header row skipped: {}:1 (x,y,label)",
            p("header.csv")
        )),
        "{err}"
    );
    assert!(err.contains("20 samples, 2 features"), "{err}");
    // a first row with numeric and non-numeric fields
    write(
        &d.join("mixed.csv"),
        csv_rows("x,2.5,label\n", 20).as_bytes(),
    );
    let spec = format!("csv:{}", p("mixed.csv"));
    assert_rejected(
        &train_cli(&spec, "2-4-2", &p("mixed-run"), &[]),
        &[
            &format!("{}:1 column 1", p("mixed.csv")),
            "'x' is not a number, but column 2 is ('2.5')",
        ],
    );
    assert!(!d.join("mixed-run").exists());
}

/// Values near the f32 limit (±3e38) whose normalisation overflows f32
/// are bad input found at load time (exit 2, naming the file and the
/// column), before any output exists; training used to diverge on the
/// non-finite inputs (exit 3) and leave an empty --out directory.
#[test]
fn csv_values_whose_normalisation_overflows_are_rejected_at_load_time() {
    let d = dir("csv-overflow");
    let p = |n: &str| d.join(n).display().to_string();
    // column 2: ±3e38 (unit: the range 6e38 overflows f32); standard: a
    // mean of 1.5e38 makes x - mean overflow for -3e38
    let mut text = String::from("a,b,label\n");
    for i in 0..40 {
        let big = if i % 4 == 0 { "-3e38" } else { "3e38" };
        text.push_str(&format!("{}.5,{big},{}\n", i % 7, i % 2));
    }
    write(&d.join("big.csv"), text.as_bytes());
    let spec = format!("csv:{}", p("big.csv"));
    for (mode, needle) in [
        ("unit", "a range of 6.000e38 that overflows f32"),
        ("standard", "--normalize standard gives a non-finite value"),
        ("channel", "--normalize channel gives a non-finite value"),
    ] {
        let out = p(&format!("run-{mode}"));
        assert_rejected(
            &train_cli(&spec, "2-4-2", &out, &["--normalize", mode]),
            &[&spec, "column 2", needle],
        );
        assert!(
            !Path::new(&out).exists(),
            "--normalize {mode}: nothing written"
        );
    }
    // without --model the data set is loaded to size the model: the same
    let out = p("run-default-model");
    let mut a = vec!["train", "--data", &spec, "--normalize", "unit"];
    a.extend_from_slice(&["--epochs", "1", "--out", &out]);
    assert_rejected(&a, &[&spec, "column 2", "overflows f32"]);
    assert!(!Path::new(&out).exists());
}

/// 1 MiB of zeros, gzipped, repeated `mib` times as gzip members: one
/// stream (a reader of concatenated members) of `mib` MiB of zeros, made
/// in a moment. `head` is the stream's first bytes.
fn zeros_gz(head: &[u8], mib: usize) -> Vec<u8> {
    let zeros = gz(&vec![0u8; 1 << 20]);
    let mut v = gz(head);
    for _ in 0..mib {
        v.extend_from_slice(&zeros);
    }
    v
}

/// A gzip bomb (a few hundred KB that inflate to 64 MiB) is rejected by
/// every loader that reads gzip (IDX, CIFAR files and archives, CSV)
/// with exit 2 once it passes the limit on decompressed data, here set
/// to 8 MiB by `FDGR_INFLATE_LIMIT_MIB`; within the limit the same
/// loaders read gzip as before.
#[test]
fn gzip_bombs_are_rejected_by_every_loader() {
    let d = dir("gz-bomb");
    let p = |n: &str| d.join(n).display().to_string();
    let bomb = zeros_gz(b"", 64);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    // MNIST directory: the training images are the bomb
    let m = d.join("mnist");
    std::fs::create_dir_all(&m).unwrap();
    write(&m.join("train-images-idx3-ubyte.gz"), &bomb);
    write(&m.join("train-labels-idx1-ubyte"), &idx(&[2], &[0, 1]));
    write(&m.join("t10k-images-idx3-ubyte"), &idx(&[2, 2, 2], &[0; 8]));
    write(&m.join("t10k-labels-idx1-ubyte"), &idx(&[2], &[0, 1]));
    // CIFAR: one file, a directory, an archive whose member claims 64 MiB
    write(&d.join("batch.bin.gz"), &bomb);
    let c = d.join("cifar");
    std::fs::create_dir_all(&c).unwrap();
    write(&c.join("data_batch_1.bin.gz"), &bomb);
    let mut header = tar_member("cifar-10-batches-bin/data_batch_1.bin", &[], b'0');
    header[TAR_SIZE..TAR_SIZE + 12].copy_from_slice(format!("{:011o}\0", 64u64 << 20).as_bytes());
    tar_fix_checksum(&mut header);
    write(&d.join("cifar.tar.gz"), &zeros_gz(&header, 64));
    write(&d.join("t.csv.gz"), &bomb);
    let cases = [
        (
            format!("mnist:{}", m.display()),
            "train-images-idx3-ubyte.gz",
        ),
        (
            format!(
                "idx:{},{}",
                m.join("train-images-idx3-ubyte.gz").display(),
                m.join("train-labels-idx1-ubyte").display()
            ),
            "train-images-idx3-ubyte.gz",
        ),
        (format!("cifar10:{}", p("batch.bin.gz")), "batch.bin.gz"),
        (format!("cifar10:{}", c.display()), "data_batch_1.bin.gz"),
        (format!("cifar10:{}", p("cifar.tar.gz")), "cifar.tar.gz"),
        (format!("csv:{}", p("t.csv.gz")), "t.csv.gz"),
    ];
    for (spec, file) in &cases {
        let out = p("run");
        let o = bin()
            .args(train_cli(spec, "4-2", &out, &["--quiet"]))
            .env("FDGR_INFLATE_LIMIT_MIB", "8")
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{spec}: {err}");
        assert!(!err.contains("panicked"), "{spec}: {err}");
        assert!(
            err.contains(file) && err.contains("inflates to more than 8 MiB"),
            "{spec}: {err}"
        );
        assert!(!Path::new(&out).exists(), "{spec}");
    }
    // a gzip within the limit still loads
    let rows = csv_rows("", 20);
    write(&d.join("ok.csv.gz"), &gz(rows.as_bytes()));
    let spec = format!("csv:{}", p("ok.csv.gz"));
    let o = bin()
        .args(train_cli(&spec, "2-4-2", &p("ok-run"), &["--quiet"]))
        .env("FDGR_INFLATE_LIMIT_MIB", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // a malformed limit is bad input too
    let o = bin()
        .args(train_cli(&spec, "2-4-2", &p("bad-limit"), &["--quiet"]))
        .env("FDGR_INFLATE_LIMIT_MIB", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("FDGR_INFLATE_LIMIT_MIB=lots"));
}
