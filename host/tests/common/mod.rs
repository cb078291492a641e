//! Writers of the data formats, byte by byte from their specifications,
//! shared by the loader tests (`loaders.rs`) and the mutation fuzz test
//! (`data_fuzz.rs`).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// An IDX file of unsigned bytes: magic `00 00 08 ndims`, big-endian u32
/// dimensions, data.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Gzip of `bytes`.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A fresh, empty directory under the system's temporary directory.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fdgr-loaders-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a file.
pub fn write(p: &Path, b: &[u8]) {
    std::fs::write(p, b).unwrap();
}

/// The pixel bytes of a CIFAR image whose value depends on the channel,
/// the position and `seed`: `plane c` holds `base[c] + (i % 7) + seed`.
pub fn cifar_pixels(seed: u8) -> Vec<u8> {
    let base = [10u8, 100, 200];
    (0..3072)
        .map(|k| base[k / 1024] + (k % 1024 % 7) as u8 + seed % 40)
        .collect()
}

/// One CIFAR-10 record: label, 3072 pixels (R, G, B planes).
pub fn cifar10_record(label: u8, pixels: &[u8]) -> Vec<u8> {
    assert_eq!(pixels.len(), 3072);
    [&[label][..], pixels].concat()
}

/// One CIFAR-100 record: coarse label, fine label, 3072 pixels.
pub fn cifar100_record(coarse: u8, fine: u8, pixels: &[u8]) -> Vec<u8> {
    assert_eq!(pixels.len(), 3072);
    [&[coarse, fine][..], pixels].concat()
}

/// Offsets in a ustar header block (POSIX.1-1988).
pub const TAR_NAME: usize = 0;
/// Size field: 11 octal digits and a NUL.
pub const TAR_SIZE: usize = 124;
/// Checksum field: 6 octal digits, NUL, space.
pub const TAR_CHKSUM: usize = 148;
/// Entry type: b'0' regular file, b'5' directory.
pub const TAR_TYPE: usize = 156;
/// "ustar\0" then version "00".
pub const TAR_MAGIC: usize = 257;

/// Recomputes a header block's checksum (the sum of its bytes with the
/// checksum field read as spaces).
pub fn tar_fix_checksum(h: &mut [u8]) {
    h[TAR_CHKSUM..TAR_CHKSUM + 8].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| b as u32).sum();
    h[TAR_CHKSUM..TAR_CHKSUM + 8].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// One tar member: a ustar header block, the data, zero padding to 512.
pub fn tar_member(name: &str, data: &[u8], typeflag: u8) -> Vec<u8> {
    assert!(name.len() <= 100);
    let mut h = vec![0u8; 512];
    h[TAR_NAME..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0001750\0");
    h[116..124].copy_from_slice(b"0001750\0");
    h[TAR_SIZE..TAR_SIZE + 12].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"11103424166\0");
    h[TAR_TYPE] = typeflag;
    h[TAR_MAGIC..TAR_MAGIC + 8].copy_from_slice(b"ustar\x0000");
    tar_fix_checksum(&mut h);
    h.extend_from_slice(data);
    h.resize(h.len().div_ceil(512) * 512, 0);
    h
}

/// A tar archive of regular files (directories for names ending in `/`),
/// closed by two zero blocks and padded to a 10240-byte record like tar's
/// output.
pub fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut v = vec![];
    for (name, data) in members {
        let t = if name.ends_with('/') { b'5' } else { b'0' };
        v.extend(tar_member(name, data, t));
    }
    v.extend_from_slice(&[0; 1024]);
    v.resize(v.len().div_ceil(10240) * 10240, 0);
    v
}

/// The CIFAR-10 archive's layout (`cifar-10-binary.tar.gz`, uncompressed)
/// with the given batch contents (`batches[0..5]` training, `batches[5]`
/// test), the members in `order` (indices into the six batches).
pub fn cifar10_tar(batches: &[Vec<u8>; 6], order: [usize; 6]) -> Vec<u8> {
    let names = [
        "cifar-10-batches-bin/data_batch_1.bin",
        "cifar-10-batches-bin/data_batch_2.bin",
        "cifar-10-batches-bin/data_batch_3.bin",
        "cifar-10-batches-bin/data_batch_4.bin",
        "cifar-10-batches-bin/data_batch_5.bin",
        "cifar-10-batches-bin/test_batch.bin",
    ];
    let meta = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    let mut members: Vec<(&str, &[u8])> = vec![
        ("cifar-10-batches-bin/", b""),
        ("cifar-10-batches-bin/batches.meta.txt", meta),
    ];
    for i in order {
        members.push((names[i], &batches[i]));
    }
    members.push(("cifar-10-batches-bin/readme.html", b"<html></html>\n"));
    tar(&members)
}

/// The CIFAR-100 archive's layout (`cifar-100-binary.tar.gz`, uncompressed).
pub fn cifar100_tar(train: &[u8], test: &[u8]) -> Vec<u8> {
    tar(&[
        ("cifar-100-binary/", b""),
        (
            "cifar-100-binary/coarse_label_names.txt",
            b"aquatic_mammals\n",
        ),
        ("cifar-100-binary/fine_label_names.txt", b"apple\n"),
        ("cifar-100-binary/test.bin", test),
        ("cifar-100-binary/train.bin", train),
    ])
}

/// The `fdgr` binary under test.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_fdgr"))
}

/// Runs `fdgr` with `args`.
pub fn run(args: &[&str]) -> std::process::Output {
    bin().args(args).output().expect("fdgr runs")
}

/// Standard error as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Exit code 2, exactly one `error:` line mentioning every `needles`, and
/// no panic.
pub fn assert_rejected(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?}: expected exit 2; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one error line:\n{err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{args:?}: '{n}' missing from: {}",
            lines[0]
        );
    }
}

/// Runs `args(out)` to completion in `clean`, then again in `killed`
/// under `kill -9` at random moments followed by `--resume`, until it
/// completes. Asserts that it was interrupted at least twice, that every
/// checkpoint left on disk reads, and that the final `model.safetensors`
/// and the metrics (timings aside) equal the uninterrupted run's.
pub fn kill_resume_is_bit_exact(args: &dyn Fn(&Path) -> Vec<String>, clean: &Path, killed: &Path) {
    use std::process::Stdio;
    use std::time::Duration;
    let o = bin().args(args(clean)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let want = std::fs::read(clean.join("model.safetensors")).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clean.join("summary.json")).unwrap()).unwrap();
    let total = summary["seconds"].as_f64().unwrap();
    let mut kills = 0;
    let mut rng = fdgr_kernel::Rng::new(42);
    for attempt in 0..60 {
        // A kill after the final outputs were written (between the plot and
        // the exit) leaves a complete run: resuming it again is refused
        // (exit 2, tested elsewhere), and the comparison below checks it.
        if ["summary.json", "curves.png"]
            .iter()
            .all(|f| killed.join(f).is_file())
        {
            break;
        }
        let resume = killed.join("checkpoint.safetensors").exists();
        let mut cmd = bin();
        if resume {
            cmd.args([
                "train",
                "--resume",
                &killed.display().to_string(),
                "--quiet",
            ]);
        } else {
            cmd.args(args(killed));
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wait = Duration::from_secs_f64(0.05 + rng.uniform() * total * 0.6);
        std::thread::sleep(wait);
        match child.try_wait().unwrap() {
            Some(status) => {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    panic!("attempt {attempt} failed ({status}):\n{err}");
                }
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                if killed.join("checkpoint.safetensors").exists() {
                    fdgr::checkpoint::load_checkpoint(killed)
                        .expect("checkpoint intact after kill -9");
                }
            }
        }
    }
    assert!(
        kills >= 2,
        "the test must actually interrupt the run ({kills} kills)"
    );
    let got = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(
        got == want,
        "resumed run differs from the uninterrupted one after {kills} kills"
    );
    let strip = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v
            })
            .collect()
    };
    assert_eq!(
        strip(clean),
        strip(killed),
        "metrics (timings aside) must match"
    );
}

/// A learnable CIFAR-format image of class `label` (0..10): a bright
/// square whose position and colour depend on the class, on a noisy
/// background drawn from `seed` (synthetic, for tests only).
pub fn cifar_class_pixels(label: u8, seed: u64) -> Vec<u8> {
    let mut r = fdgr_kernel::Rng::new(seed);
    let mut px: Vec<u8> = (0..3072).map(|_| (r.below(64) + 32) as u8).collect();
    let (cy, cx) = (4 + 6 * (label as usize % 4), 4 + 8 * (label as usize / 4));
    for c in 0..3 {
        let v = if (label as usize + c) % 3 == 0 {
            250
        } else {
            150
        };
        for y in cy..cy + 8 {
            for x in cx..(cx + 8).min(32) {
                px[c * 1024 + y * 32 + x] = v;
            }
        }
    }
    px
}

/// A CIFAR-10 directory (`data_batch_1..5.bin`, `test_batch.bin`) of
/// `per_batch` synthetic images per batch file, labels cycling 0..10.
pub fn cifar10_dir(name: &str, per_batch: usize) -> PathBuf {
    let d = dir(name);
    let files = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (f, file) in files.iter().enumerate() {
        let mut b = vec![];
        for i in 0..per_batch {
            let label = (i % 10) as u8;
            b.extend(cifar10_record(
                label,
                &cifar_class_pixels(label, (f * 1000 + i) as u64),
            ));
        }
        write(&d.join(file), &b);
    }
    d
}

/// A safetensors file's header (JSON object) and data.
pub fn safetensors_parts(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let h = serde_json::from_slice(&bytes[8..8 + n]).expect("a JSON header");
    (h, bytes[8 + n..].to_vec())
}

/// A safetensors file from a header and data (the header padded with
/// spaces to a multiple of 8 bytes, as safetensors writes it).
pub fn safetensors_join(h: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let mut hb = serde_json::to_vec(h).expect("serializes");
    while hb.len() % 8 != 0 {
        hb.push(b' ');
    }
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(data);
    out
}
