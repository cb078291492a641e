//! Helpers of the firmware cross-check: QEMU, ELF sizes and symbols, the
//! defmt log, the sample stream, the instruction counts, and the host
//! replay of the device's fine-tuning.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fdgr_kernel::finetune::{trained_shape, Memory, Mode};
use fdgr_kernel::{export, stream, Method};

use crate::util::root;

/// The fine-tuning configuration the firmware is built with: the very
/// file the firmware compiles, so the replay uses the same numbers.
#[allow(dead_code)]
#[path = "../../firmware-examples/common/src/config.rs"]
pub mod fw_config;

/// `firmware-examples/`.
pub fn fw_dir() -> PathBuf {
    root().join("firmware-examples")
}

/// Where the cross-check keeps what it produces (ignored by git).
pub fn out_dir() -> PathBuf {
    fw_dir().join("target").join("xtask")
}

/// Makes sure `qemu-system-arm` is on PATH: installs it with apt-get when
/// missing and running as root, fails otherwise (never skips).
pub fn ensure_qemu() -> Result<(), String> {
    crate::util::ensure_apt(
        "qemu-system-arm",
        "qemu-system-arm",
        "the firmware cross-check does not skip",
    )
}

/// `qemu-system-arm --version` as (major, minor).
pub fn qemu_version() -> Result<(u32, u32), String> {
    let out = Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .map_err(|e| format!("qemu-system-arm --version: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or_else(|| format!("cannot read the QEMU version from {text:?}"))?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(format!("cannot read the QEMU version from {text:?}")),
    }
}

/// Sizes and the marker address of a firmware ELF.
#[derive(Clone, Copy, Debug)]
pub struct ElfInfo {
    /// Bytes in flash: every allocated section with contents (vector table,
    /// code, read-only data, the initial values of `.data`, boot2).
    pub flash: u64,
    /// Bytes of static RAM: every allocated section placed in RAM
    /// (0x2000_0000..0x4000_0000): `.data`, `.bss`, `.uninit`.
    pub ram: u64,
    /// Address of `fdgr_mark` (Thumb bit cleared).
    pub marker: Option<u64>,
}

/// Reads section sizes and `fdgr_mark` from an ELF file.
pub fn elf_info(bytes: &[u8]) -> Result<ElfInfo, String> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionFlags, SectionKind};
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
    let (mut flash, mut ram) = (0, 0);
    for s in file.sections() {
        let alloc = match s.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_ALLOC) != 0,
            _ => false,
        };
        if !alloc || s.size() == 0 {
            continue;
        }
        if (0x2000_0000..0x4000_0000).contains(&s.address()) {
            ram += s.size();
        }
        if s.kind() != SectionKind::UninitializedData {
            flash += s.size();
        }
    }
    let marker = file
        .symbols()
        .find(|s| s.name() == Ok("fdgr_mark"))
        .map(|s| s.address() & !1);
    Ok(ElfInfo { flash, ram, marker })
}

/// A decoded defmt frame: level (`INFO`, …) and message.
pub struct LogLine {
    /// Level, upper case; empty for `println!` frames.
    pub level: String,
    /// The formatted message.
    pub text: String,
}

/// Decodes a defmt byte stream with the table in `elf`.
pub fn decode_defmt(elf: &[u8], stream: &[u8]) -> Result<Vec<LogLine>, String> {
    use defmt_decoder::{DecodeError, Table};
    let table = Table::parse(elf)
        .map_err(|e| format!("defmt table: {e}"))?
        .ok_or("the ELF has no .defmt section")?;
    let mut dec = table.new_stream_decoder();
    dec.received(stream);
    let mut lines = vec![];
    loop {
        match dec.decode() {
            Ok(f) => lines.push(LogLine {
                level: f
                    .level()
                    .map(|l| l.as_str().to_uppercase())
                    .unwrap_or_default(),
                text: f.display_message().to_string(),
            }),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => {
                if table.encoding().can_recover() {
                    lines.push(LogLine {
                        level: "ERROR".into(),
                        text: "(malformed defmt frame)".into(),
                    });
                } else {
                    return Err("malformed defmt frame".into());
                }
            }
        }
    }
    Ok(lines)
}

/// Exit code and output of a command run with a time limit.
pub struct Finished {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Wall time.
    pub seconds: f64,
}

/// Runs `c`, killing it after `limit`; a timeout is an error.
pub fn run_limited(mut c: Command, limit: Duration) -> Result<Finished, String> {
    let t = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", c.get_program()))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let ro = std::thread::spawn(move || {
        let mut b = vec![];
        let _ = out.read_to_end(&mut b);
        b
    });
    let re = std::thread::spawn(move || {
        let mut b = vec![];
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{:?} did not finish within {} s (killed)",
                c.get_program(),
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        code: status.code(),
        stdout: ro.join().unwrap_or_default(),
        stderr: re.join().unwrap_or_default(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// What the firmware logged.
#[derive(Default, Debug)]
pub struct DeviceLog {
    /// Bit pattern of the loss of every step, in order.
    pub losses: Vec<u32>,
    /// Bit patterns of the final θ.
    pub theta: Vec<u32>,
    /// FNV-1a of θ's bytes as the device computed it.
    pub hash: Option<u32>,
    /// Peak stack in bytes.
    pub stack_peak: Option<u64>,
    /// The firmware's own sum of its fdgr buffers.
    pub fdgr_ram: Option<u64>,
    /// `fdgr done` was logged.
    pub done: bool,
    /// ERROR lines.
    pub errors: Vec<String>,
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// Extracts the cross-check values from the decoded log.
pub fn parse_log(lines: &[LogLine]) -> Result<DeviceLog, String> {
    let mut d = DeviceLog::default();
    for l in lines {
        let t = l.text.as_str();
        if l.level == "ERROR" {
            d.errors.push(t.to_string());
            continue;
        }
        if let Some(rest) = t.strip_prefix("step ") {
            // step <i> loss <v> bits 0x<b>[ cycles <c>]
            let w: Vec<&str> = rest.split_whitespace().collect();
            let i: usize = w.first().and_then(|v| v.parse().ok()).ok_or(t)?;
            if i != d.losses.len() {
                return Err(format!("step {i} logged out of order: {t}"));
            }
            let pos = w.iter().position(|x| *x == "bits").ok_or(t)?;
            let b = w.get(pos + 1).and_then(|v| parse_hex(v)).ok_or(t)?;
            d.losses.push(b);
        } else if let Some(rest) = t.strip_prefix("theta fnv1a ") {
            d.hash = rest.split_whitespace().next().and_then(parse_hex);
        } else if let Some(rest) = t.strip_prefix("theta[") {
            let (off, list) = rest.split_once("] ").ok_or(t)?;
            let off: usize = off.parse().map_err(|_| t.to_string())?;
            if off != d.theta.len() {
                return Err(format!("theta chunk at {off} out of order"));
            }
            let list = list.trim().trim_start_matches('[').trim_end_matches(']');
            for v in list.split(',') {
                d.theta
                    .push(v.trim().parse().map_err(|_| format!("bad value in {t}"))?);
            }
        } else if let Some(rest) = t.strip_prefix("stack peak ") {
            d.stack_peak = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if t.starts_with("static RAM for fdgr:") {
            d.fdgr_ram = t
                .rsplit('=')
                .next()
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok());
        } else if t == "fdgr done" {
            d.done = true;
        }
    }
    Ok(d)
}

/// FNV-1a over the little-endian bytes of bit patterns (as the firmware
/// hashes θ).
pub fn fnv1a_bits(bits: &[u32]) -> u32 {
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    export::fnv1a(&bytes)
}

/// Instructions of every step from the plugin's `mark` lines: the first
/// two marks measure the marker's own cost, then each step lies between a
/// pair of marks.
pub fn step_instructions(counts: &str, steps: usize) -> Result<Vec<u64>, String> {
    let marks: Vec<u64> = counts
        .lines()
        .filter_map(|l| l.strip_prefix("mark "))
        .map(|v| v.trim().parse::<u64>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if marks.len() != 2 + 2 * steps {
        return Err(format!(
            "expected {} marker hits, got {}",
            2 + 2 * steps,
            marks.len()
        ));
    }
    let overhead = marks[1] - marks[0];
    Ok((0..steps)
        .map(|i| marks[3 + 2 * i] - marks[2 + 2 * i] - overhead)
        .collect())
}

/// The host's run of the device's fine-tuning: same model file, same
/// stream, same configuration, same [`fdgr_kernel::finetune::FineTuner::push_and_step`].
/// Returns the loss bits of every step and the final θ's bits.
pub fn replay(
    model: &[u8],
    samples: &[u8],
    method: Method<f32>,
    mode: Mode,
    opt: usize,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    match opt {
        0 => replay_with(
            model,
            samples,
            method,
            mode,
            fw_config::SGD,
            fw_config::LR,
            0,
        ),
        _ => replay_with(
            model,
            samples,
            method,
            mode,
            fw_config::ADAM,
            fw_config::ADAM_LR,
            2,
        ),
    }
}

fn replay_with<P: fdgr_kernel::Optim<f32> + Copy>(
    model: &[u8],
    samples: &[u8],
    method: Method<f32>,
    mode: Mode,
    opt: P,
    lr: f32,
    opt_state: usize,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    let shape = export::decode_shape(model).map_err(|e| format!("model: {e}"))?;
    let mut frozen = vec![0.0f32; shape.param_count()];
    export::decode(model, Some(&shape), &mut frozen).map_err(|e| format!("model: {e}"))?;
    let trained = trained_shape(&shape, mode);
    let tp = trained.param_count();
    // The trained parameters: all of θ, or the last layer (θ's tail).
    let head = frozen.len() - tp;
    let mut theta = frozen[head..].to_vec();
    let b = fw_config::BATCH;
    let ws_len = shape
        .workspace_len(b, false)
        .max(trained.workspace_len(b, method.needs_hvp()));
    let mut dir = vec![0.0f32; tp];
    let mut point = vec![0.0f32; if method.scratch_vectors() > 0 { tp } else { 0 }];
    let mut ws = vec![0.0f32; ws_len];
    let mut x = vec![0.0f32; b * fw_config::INPUTS];
    let nfeats = match mode {
        Mode::Full => 0,
        Mode::LastLayer => b * shape.dim(shape.layers() - 1),
    };
    let mut feats = vec![0.0f32; nfeats];
    let mut y = vec![0u32; b];
    let mut tuner = fw_config::tuner(method, mode, opt, lr);
    let nstate = if opt_state > 0 { tp } else { 0 };
    let (mut s0, mut s1) = (vec![0.0f32; nstate], vec![0.0f32; nstate]);
    let mut losses = vec![];
    let mut i = 0;
    while let Some(sample) = stream::sample(samples, i) {
        let mem = Memory {
            theta: &mut theta,
            frozen: Some(&frozen),
            dir: &mut dir,
            point: if point.is_empty() {
                None
            } else {
                Some(&mut point[..])
            },
            point2: None,
            state: if nstate > 0 {
                [Some(&mut s0[..]), Some(&mut s1[..])]
            } else {
                [None, None]
            },
            ws: &mut ws,
            x: &mut x,
            feats: &mut feats,
            y: &mut y,
        };
        let loss = tuner
            .push_and_step(&shape, sample, mem)
            .map_err(|e| format!("host replay, step {i}: {e}"))?;
        losses.push(loss.to_bits());
        i += 1;
    }
    let full = frozen[..head].iter().chain(&theta);
    Ok((losses, full.map(|t| t.to_bits()).collect()))
}

/// Reads a file, naming it in the error.
pub fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &str, text: &str) -> LogLine {
        LogLine {
            level: level.into(),
            text: text.into(),
        }
    }

    #[test]
    fn log_parsing() {
        let lines = [
            line("INFO", "static RAM for fdgr: theta 4 + dir 4 = 30100 bytes"),
            line("INFO", "step 0 loss 1 bits 0x3f800000"),
            line("INFO", "step 1 loss 0.5 bits 0x3f000000 cycles 123"),
            line("INFO", "theta fnv1a 0x12345678 over 3 parameters"),
            line("INFO", "theta[0] [1, 2]"),
            line("INFO", "theta[2] [3]"),
            line("INFO", "stack peak 1788 bytes (painted window 65536 bytes)"),
            line("INFO", "fdgr done"),
        ];
        let d = parse_log(&lines).unwrap();
        assert_eq!(d.losses, vec![0x3f80_0000, 0x3f00_0000]);
        assert_eq!(d.theta, vec![1, 2, 3]);
        assert_eq!(d.hash, Some(0x1234_5678));
        assert_eq!(d.stack_peak, Some(1788));
        assert_eq!(d.fdgr_ram, Some(30100));
        assert!(d.done && d.errors.is_empty());
        // Out-of-order steps or chunks are errors, not silently accepted.
        assert!(parse_log(&[line("INFO", "step 1 loss 1 bits 0x1")]).is_err());
        assert!(parse_log(&[line("INFO", "theta[64] [1]")]).is_err());
        let e = parse_log(&[line("ERROR", "step 0: non-finite")]).unwrap();
        assert_eq!(e.errors.len(), 1);
    }

    #[test]
    fn instruction_counts() {
        let counts = "total 999\nmark 100\nmark 105\nmark 200\nmark 305\nmark 400\nmark 455\n";
        assert_eq!(step_instructions(counts, 2).unwrap(), vec![100, 50]);
        assert!(step_instructions(counts, 3).is_err());
    }

    #[test]
    fn hash_matches_kernel_fnv1a() {
        let bits = [0x3f80_0000u32, 7];
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(fnv1a_bits(&bits), export::fnv1a(&bytes));
    }
}
