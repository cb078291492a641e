//! The boards of `firmware-examples/`: where each one's folder, ELF and
//! memory map are, how it is run, and the cargo command that builds or runs
//! it with its own `.cargo/config.toml` (target, linker scripts, runner).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A firmware example (a folder of `firmware-examples/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Board {
    /// QEMU `mps2-an386` (Cortex-M4F), defmt over semihosting.
    QemuM4,
    /// NUCLEO-F411RE (STM32F411, Cortex-M4F), defmt over RTT.
    Stm32f4,
    /// nRF52840-DK (Cortex-M4F), defmt over RTT.
    Nrf52840,
    /// Raspberry Pi Pico (RP2040, Cortex-M0+, soft float), defmt over RTT.
    Rp2040,
}

/// How a board's firmware runs: its runner in `.cargo/config.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// `qemu-system-arm`: defmt frames (binary) on its standard output.
    Qemu,
    /// `probe-rs run --chip …`: flashes over a debug probe, prints the
    /// decoded defmt log as text.
    ProbeRs,
}

impl Board {
    /// Every board, QEMU first.
    pub const ALL: [Board; 4] = [
        Board::QemuM4,
        Board::Stm32f4,
        Board::Nrf52840,
        Board::Rp2040,
    ];

    /// Its folder's name: `qemu-m4`, `stm32f4`, `nrf52840`, `rp2040`.
    pub const fn name(self) -> &'static str {
        match self {
            Board::QemuM4 => "qemu-m4",
            Board::Stm32f4 => "stm32f4",
            Board::Nrf52840 => "nrf52840",
            Board::Rp2040 => "rp2040",
        }
    }

    /// The board named `s` ([`Board::name`]).
    pub fn parse(s: &str) -> Option<Board> {
        Board::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The hardware, in words.
    pub const fn describe(self) -> &'static str {
        match self {
            Board::QemuM4 => "QEMU mps2-an386 (Cortex-M4F)",
            Board::Stm32f4 => "NUCLEO-F411RE (STM32F411, Cortex-M4F)",
            Board::Nrf52840 => "nRF52840-DK (Cortex-M4F)",
            Board::Rp2040 => "Raspberry Pi Pico (RP2040, Cortex-M0+)",
        }
    }

    /// The cargo package (and binary) of its firmware.
    pub const fn package(self) -> &'static str {
        match self {
            Board::QemuM4 => "fdgr-qemu-m4",
            Board::Stm32f4 => "fdgr-stm32f4",
            Board::Nrf52840 => "fdgr-nrf52840",
            Board::Rp2040 => "fdgr-rp2040",
        }
    }

    /// The target its `.cargo/config.toml` builds for.
    pub const fn triple(self) -> &'static str {
        match self {
            Board::Rp2040 => "thumbv6m-none-eabi",
            _ => "thumbv7em-none-eabihf",
        }
    }

    /// How it runs.
    pub const fn runner(self) -> Runner {
        match self {
            Board::QemuM4 => Runner::Qemu,
            _ => Runner::ProbeRs,
        }
    }

    /// Bytes of static RAM the firmware holds besides fdgr's buffers: a
    /// few words of its own, and on the probe-rs boards defmt-rtt's 1 KiB
    /// buffer and control block (measured: 24 and 1,100 bytes).
    pub const fn static_overhead(self) -> u64 {
        match self.runner() {
            Runner::Qemu => 256,
            Runner::ProbeRs => 256 + 1024 + 128,
        }
    }

    /// Its folder.
    pub fn dir(self, fw: &Path) -> PathBuf {
        fw.join(self.name())
    }

    /// The ELF a release build for `triple` leaves.
    pub fn elf(self, fw: &Path, triple: &str) -> PathBuf {
        fw.join("target")
            .join(triple)
            .join("release")
            .join(self.package())
    }

    /// Its `memory.x`.
    pub fn memory_x(self, fw: &Path) -> PathBuf {
        self.dir(fw).join("memory.x")
    }

    /// Its memory map, read from its `memory.x`.
    pub fn memory(self, fw: &Path) -> Result<MemoryMap, String> {
        let p = self.memory_x(fw);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        parse_memory_x(&text).map_err(|e| format!("{}: {e}", p.display()))
    }
}

impl std::fmt::Display for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a board's linker script offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    /// Bytes of flash: every region other than `RAM` (`FLASH`, the RP2040's
    /// `BOOT2`).
    pub flash: u64,
    /// Bytes of RAM (the `RAM` region).
    pub ram: u64,
}

/// Reads the `MEMORY` block of a `memory.x`: regions
/// `NAME : ORIGIN = …, LENGTH = …`, lengths as sums and differences of
/// decimal or `0x` numbers with an optional `K` or `M`.
pub fn parse_memory_x(text: &str) -> Result<MemoryMap, String> {
    // Drop /* comments */.
    let mut clean = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        clean.push_str(&rest[..i]);
        rest = match rest[i..].find("*/") {
            Some(j) => &rest[i + j + 2..],
            None => "",
        };
    }
    clean.push_str(rest);
    let start = clean.find("MEMORY").ok_or("no MEMORY block")?;
    let body = &clean[start..];
    let open = body.find('{').ok_or("no MEMORY block")?;
    let close = body.find('}').ok_or("MEMORY block not closed")?;
    let (mut flash, mut ram) = (0u64, None);
    for line in body[open + 1..close].lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (name, spec) = line
            .split_once(':')
            .ok_or_else(|| format!("cannot read the region `{line}`"))?;
        let name = name.split_whitespace().next().unwrap_or_default();
        let len = spec
            .split(',')
            .find_map(|f| {
                let (k, v) = f.split_once('=')?;
                matches!(k.trim(), "LENGTH" | "len" | "l").then_some(v)
            })
            .ok_or_else(|| format!("region {name}: no LENGTH"))?;
        let len = eval(len).ok_or_else(|| format!("region {name}: cannot read LENGTH {len:?}"))?;
        match name {
            "RAM" => ram = Some(len),
            // the live image's state: flash no program may use
            "STORE" => {}
            _ => flash += len,
        }
    }
    match ram {
        Some(ram) if flash > 0 => Ok(MemoryMap { flash, ram }),
        _ => Err("expected a RAM region and a FLASH region".into()),
    }
}

/// `a + b - c` of numbers like `512K`, `4M`, `0x100`, `2048`.
fn eval(expr: &str) -> Option<u64> {
    let mut total: i128 = 0;
    let mut sign = 1i128;
    let mut term = String::new();
    let flush = |term: &mut String, sign: i128, total: &mut i128| -> Option<()> {
        let t = term.trim();
        if t.is_empty() {
            return None;
        }
        let (digits, mul) = match t.as_bytes()[t.len() - 1] {
            b'K' | b'k' => (&t[..t.len() - 1], 1024),
            b'M' | b'm' => (&t[..t.len() - 1], 1024 * 1024),
            _ => (t, 1),
        };
        let digits = digits.trim();
        let v = match digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            Some(h) => i128::from_str_radix(h, 16).ok()?,
            None => digits.parse::<i128>().ok()?,
        };
        *total += sign * v * mul;
        term.clear();
        Some(())
    };
    for c in expr.chars() {
        match c {
            '+' | '-' => {
                flush(&mut term, sign, &mut total)?;
                sign = if c == '+' { 1 } else { -1 };
            }
            _ => term.push(c),
        }
    }
    flush(&mut term, sign, &mut total)?;
    u64::try_from(total).ok()
}

/// The cargo that runs us (`$CARGO`), else `cargo` on PATH.
pub fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo <sub> --release` in a board's folder `folder` of the firmware
/// workspace `fw` (so its `.cargo/config.toml` applies), with the given
/// `FDGR_*` variables, the board crate's `features` (`micromath`, `conv`)
/// and nothing inherited that would change the build.
pub fn cargo(
    fw: &Path,
    sub: &str,
    folder: &str,
    vars: &[(&str, &str)],
    features: &[&str],
) -> Command {
    let mut c = Command::new(cargo_bin());
    c.current_dir(fw.join(folder))
        .args([sub, "--release"])
        .env("CARGO_TARGET_DIR", fw.join("target"))
        .env("DEFMT_LOG", "info")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for v in [
        "FDGR_MODEL",
        "FDGR_STREAM",
        "FDGR_METHOD",
        "FDGR_OPT",
        "FDGR_MODE",
        "FDGR_FAULT",
        "FDGR_SAVE_EVERY",
        "FDGR_LR",
        "FDGR_GAMMA",
        "FDGR_EPS",
        "FDGR_RHO",
        "FDGR_FLASH",
    ] {
        c.env_remove(v);
    }
    for (k, val) in vars {
        c.env(k, val);
    }
    if !features.is_empty() {
        c.args(["--features", &features.join(",")]);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firmware-examples")
    }

    #[test]
    fn the_boards_memory_maps() {
        let k = 1024;
        let want = [
            (Board::QemuM4, 4 * k * k, 4 * k * k),
            // program flash: the chip's less the live image's STORE
            (Board::Stm32f4, 256 * k, 128 * k),
            (Board::Nrf52840, 896 * k, 256 * k),
            // BOOT2 (256 B) + FLASH (2 MiB − 128 KiB − 256 B)
            (Board::Rp2040, 1920 * k, 256 * k),
        ];
        for (b, flash, ram) in want {
            assert_eq!(b.memory(&fw()).unwrap(), MemoryMap { flash, ram }, "{b}");
            assert!(b.dir(&fw()).join(".cargo").join("config.toml").is_file());
            assert_eq!(Board::parse(b.name()), Some(b));
        }
        assert_eq!(Board::parse("esp32"), None);
    }

    #[test]
    fn memory_x_lengths() {
        assert_eq!(eval("2048K - 0x100"), Some(2048 * 1024 - 256));
        assert_eq!(eval(" 4M "), Some(4 << 20));
        assert_eq!(eval("1K + 16"), Some(1040));
        assert_eq!(eval("16 - 32"), None);
        assert_eq!(eval("12Q"), None);
        assert!(parse_memory_x("MEMORY { FLASH : ORIGIN = 0, LENGTH = 1K }").is_err());
        let m = parse_memory_x(
            "/* RAM : ORIGIN = 0, LENGTH = 9 */\nMEMORY\n{\n FLASH : ORIGIN = 0x0, LENGTH = 64K\n RAM : ORIGIN = 0x20000000, LENGTH = 20K\n}\n",
        )
        .unwrap();
        assert_eq!(
            m,
            MemoryMap {
                flash: 65536,
                ram: 20480
            }
        );
    }
}
