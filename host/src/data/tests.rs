//! Tests of the data sets: the built-in sets, normalisation, decompression
//! limits and memory checks.

use super::*;
use crate::memory::{address_space_limit, cgroup_room, kib_field};

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
    let unlimited = "Max address space         unlimited            unlimited            bytes\n";
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
