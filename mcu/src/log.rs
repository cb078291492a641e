//! What the firmware logs: the defmt stream decoded with the ELF's table
//! (QEMU writes the binary frames), or the text lines `probe-rs run`
//! prints, and the values read from them.
//!
//! The firmware (`firmware-examples/common/src/lib.rs`, `run`) logs the
//! configuration and `static RAM for fdgr: … = <n> bytes`, one
//! `step <i> loss <value> bits 0x<bits>[ cycles <c>]` per step, `theta
//! fnv1a 0x<hash> over <P> parameters` and the bit patterns of θ
//! (`theta[<offset>] [b, …]`), `stack peak <n> bytes`, and `fdgr done`.

use defmt_decoder::{DecodeError, StreamDecoder, Table};

/// A decoded log line: level (`INFO`, …) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Level, upper case; empty for `println!` frames.
    pub level: String,
    /// The formatted message.
    pub text: String,
}

impl LogLine {
    /// The per-step and per-weight lines (bulky: kept in log files, shown
    /// as progress).
    pub fn is_bulky(&self) -> bool {
        self.text.starts_with("theta[") || (self.text.starts_with("step ") && self.level == "INFO")
    }
}

/// The defmt table of a firmware ELF.
pub struct Defmt {
    table: Table,
}

impl Defmt {
    /// Reads the table from the ELF's `.defmt` section.
    pub fn new(elf: &[u8]) -> Result<Defmt, String> {
        let table = Table::parse(elf)
            .map_err(|e| format!("defmt table: {e}"))?
            .ok_or("the ELF has no .defmt section")?;
        Ok(Defmt { table })
    }

    /// A decoder for a stream of frames, fed as bytes arrive.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            dec: self.table.new_stream_decoder(),
            can_recover: self.table.encoding().can_recover(),
        }
    }
}

/// A defmt stream being decoded ([`Defmt::stream`]).
pub struct Stream<'a> {
    dec: Box<dyn StreamDecoder + 'a>,
    can_recover: bool,
}

impl Stream<'_> {
    /// Feeds `bytes`; returns the lines completed by them.
    pub fn received(&mut self, bytes: &[u8]) -> Result<Vec<LogLine>, String> {
        self.dec.received(bytes);
        let mut lines = vec![];
        loop {
            match self.dec.decode() {
                Ok(f) => lines.push(LogLine {
                    level: f
                        .level()
                        .map(|l| l.as_str().to_uppercase())
                        .unwrap_or_default(),
                    text: f.display_message().to_string(),
                }),
                Err(DecodeError::UnexpectedEof) => break,
                Err(DecodeError::Malformed) => {
                    if self.can_recover {
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
}

/// Decodes a whole defmt byte stream with the table in `elf`.
pub fn decode_defmt(elf: &[u8], stream: &[u8]) -> Result<Vec<LogLine>, String> {
    Defmt::new(elf)?.stream().received(stream)
}

/// The `--log-format` that makes `probe-rs run` print lines
/// [`parse_text_line`] reads: the level, then the message.
pub const PROBE_RS_LOG_FORMAT: &str = "{L} {s}";

/// A line `probe-rs run` printed with [`PROBE_RS_LOG_FORMAT`]
/// (`INFO  step 0 loss …`; colour codes are dropped); `None` for its other
/// output (flashing progress, host messages).
pub fn parse_text_line(line: &str) -> Option<LogLine> {
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        clean.push(c);
    }
    let t = clean.trim_end_matches(['\r', '\n']).trim_start();
    // `LEVEL message`, or `[LEVEL] message`.
    let (level, text) = match t.strip_prefix('[') {
        Some(r) => r.split_once(']')?,
        None => t.split_once(char::is_whitespace).unwrap_or((t, "")),
    };
    let level = level.trim();
    if !matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") {
        return None;
    }
    Some(LogLine {
        level: level.to_string(),
        text: text.trim().to_string(),
    })
}

/// One step's line: `step <i> loss <value> bits 0x<bits>[ cycles <c>]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLine {
    /// The step.
    pub step: usize,
    /// The loss before it (from its bits).
    pub loss: f32,
    /// The loss's bit pattern.
    pub bits: u32,
    /// Cycles the step took, where the board counts them.
    pub cycles: Option<u32>,
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// Reads a step line; `Ok(None)` for any other line, an error for a step
/// line that cannot be read.
pub fn parse_step(l: &LogLine) -> Result<Option<StepLine>, String> {
    let t = l.text.as_str();
    let Some(rest) = t.strip_prefix("step ") else {
        return Ok(None);
    };
    if l.level == "ERROR" {
        return Ok(None);
    }
    let w: Vec<&str> = rest.split_whitespace().collect();
    let bad = || format!("cannot read the step line {t:?}");
    let step: usize = w.first().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let pos = w.iter().position(|x| *x == "bits").ok_or_else(bad)?;
    let bits = w.get(pos + 1).and_then(|v| parse_hex(v)).ok_or_else(bad)?;
    let cycles = match w.iter().position(|x| *x == "cycles") {
        Some(p) => Some(w.get(p + 1).and_then(|v| v.parse().ok()).ok_or_else(bad)?),
        None => None,
    };
    Ok(Some(StepLine {
        step,
        loss: f32::from_bits(bits),
        bits,
        cycles,
    }))
}

/// What the firmware logged.
#[derive(Default, Debug)]
pub struct DeviceLog {
    /// Bit pattern of the loss of every step, in order.
    pub losses: Vec<u32>,
    /// Cycles of every step, where the board counts them.
    pub cycles: Vec<u32>,
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

impl DeviceLog {
    /// Whether a finished run logged all it should: one loss per step
    /// (`steps`), `params` weights (when given; a replay on the host checks
    /// them otherwise), and weights that hash to what the device computed.
    /// Says what is missing when not.
    pub fn check_whole(&self, steps: usize, params: Option<usize>) -> Result<(), String> {
        let weights = params.unwrap_or(self.theta.len());
        if self.losses.len() != steps || self.theta.len() != weights {
            return Err(format!(
                "logged {} losses and {} weights, expected {steps} and {weights}",
                self.losses.len(),
                self.theta.len()
            ));
        }
        if self.hash != Some(crate::replay::fnv1a_bits(&self.theta)) {
            return Err("the logged weights do not match the device's hash".into());
        }
        Ok(())
    }
}

/// Extracts the values from the decoded log.
pub fn parse_log(lines: &[LogLine]) -> Result<DeviceLog, String> {
    let mut d = DeviceLog::default();
    for l in lines {
        let t = l.text.as_str();
        if l.level == "ERROR" {
            d.errors.push(t.to_string());
            continue;
        }
        if let Some(s) = parse_step(l)? {
            if s.step != d.losses.len() {
                return Err(format!("step {} logged out of order: {t}", s.step));
            }
            d.losses.push(s.bits);
            if let Some(c) = s.cycles {
                d.cycles.push(c);
            }
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

/// The log as text, one `LEVEL message` line per frame.
pub fn to_text(lines: &[LogLine]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(&format!("{:<5} {}\n", l.level, l.text));
    }
    s
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
        assert_eq!(d.cycles, vec![123]);
        assert_eq!(d.theta, vec![1, 2, 3]);
        assert_eq!(d.hash, Some(0x1234_5678));
        assert_eq!(d.stack_peak, Some(1788));
        assert_eq!(d.fdgr_ram, Some(30100));
        assert!(d.done && d.errors.is_empty());
        // Out-of-order steps or chunks are errors, not silently accepted.
        assert!(parse_log(&[line("INFO", "step 1 loss 1 bits 0x1")]).is_err());
        assert!(parse_log(&[line("INFO", "theta[64] [1]")]).is_err());
        assert!(parse_log(&[line("INFO", "step 0 loss 1 bits")]).is_err());
        assert!(parse_log(&[line("INFO", "step 0 loss 1 bits 0x1 cycles x")]).is_err());
        let e = parse_log(&[line("ERROR", "step 0: non-finite")]).unwrap();
        assert_eq!(e.errors.len(), 1);
    }

    #[test]
    fn probe_rs_text_lines() {
        assert_eq!(
            parse_text_line("INFO  step 3 loss 0.25 bits 0x3e800000 cycles 9\n"),
            Some(line("INFO", "step 3 loss 0.25 bits 0x3e800000 cycles 9"))
        );
        assert_eq!(
            parse_text_line("\u{1b}[32mINFO \u{1b}[0m fdgr done"),
            Some(line("INFO", "fdgr done"))
        );
        assert_eq!(
            parse_text_line("[ERROR] step 2: non-finite"),
            Some(line("ERROR", "step 2: non-finite"))
        );
        assert_eq!(parse_text_line("      Erasing ✔ 100% [####]"), None);
        assert_eq!(parse_text_line(""), None);
        assert_eq!(parse_text_line("INFORMATION"), None);
    }

    /// A whole log passes; a missing loss, a missing weight or a hash that
    /// does not cover the weights fails, naming what.
    #[test]
    fn check_whole_names_what_is_missing() {
        let theta = vec![1u32, 2, 3];
        let whole = DeviceLog {
            losses: vec![7, 8],
            hash: Some(crate::replay::fnv1a_bits(&theta)),
            theta,
            done: true,
            ..DeviceLog::default()
        };
        assert_eq!(whole.check_whole(2, Some(3)), Ok(()));
        assert_eq!(whole.check_whole(2, None), Ok(()));
        let e = whole.check_whole(3, Some(3)).unwrap_err();
        assert!(e.contains("2 losses") && e.contains("expected 3"), "{e}");
        let e = whole.check_whole(2, Some(4)).unwrap_err();
        assert!(e.contains("3 weights"), "{e}");
        let torn = DeviceLog {
            hash: Some(0),
            ..whole
        };
        assert!(torn.check_whole(2, Some(3)).unwrap_err().contains("hash"));
    }
}
