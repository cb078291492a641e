//! The loaders on well-formed files of each format, written here byte by
//! byte from the format specifications.

use fdgr::data::{load, DataOptions, Normalize};
use std::io::Write;
use std::path::Path;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fdgr-loaders-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(p: &Path, b: &[u8]) {
    std::fs::write(p, b).unwrap();
}

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
