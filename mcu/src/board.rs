//! The boards of `firmware-examples/`: where each one's folder, ELF and
//! memory map are, how it is run, and the cargo command that builds or runs
//! it with its own `.cargo/config.toml` (target, linker scripts, runner).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fw_config;

/// A firmware example: a folder of `firmware-examples/` that is a member of
/// its workspace and has a `memory.x`. The boards are read from those
/// folders when fdgr is built (mcu/build.rs): the name is the folder's, the
/// package and the hardware in words its `Cargo.toml`'s (`package.name`,
/// `package.metadata.fdgr.board`), the target and runner its
/// `.cargo/config.toml`'s.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Board(usize);

/// How a board's firmware runs: its runner in `.cargo/config.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// `qemu-system-arm`: defmt frames (binary) on its standard output.
    Qemu,
    /// `probe-rs run --chip …`: flashes over a debug probe, prints the
    /// decoded defmt log as text.
    ProbeRs,
}

/// What a board's folder says about it.
struct Info {
    name: &'static str,
    describe: &'static str,
    package: &'static str,
    triple: &'static str,
    runner: Runner,
    chip: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/boards.rs"));

impl Board {
    /// Every board, in the order of the firmware workspace's `members`
    /// (QEMU first).
    pub const ALL: [Board; INFO.len()] = {
        let mut v = [Board(0); INFO.len()];
        let mut i = 0;
        while i < v.len() {
            v[i] = Board(i);
            i += 1;
        }
        v
    };

    const fn info(self) -> &'static Info {
        &INFO[self.0]
    }

    /// Its folder's name (`qemu-m4`, `stm32f4`, …).
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// The board named `s` ([`Board::name`]).
    pub fn parse(s: &str) -> Option<Board> {
        Board::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The hardware, in words (its `Cargo.toml`'s `package.metadata.fdgr.board`).
    pub const fn describe(self) -> &'static str {
        self.info().describe
    }

    /// The cargo package (and binary) of its firmware.
    pub const fn package(self) -> &'static str {
        self.info().package
    }

    /// The target its `.cargo/config.toml` builds for.
    pub const fn triple(self) -> &'static str {
        self.info().triple
    }

    /// How it runs.
    pub const fn runner(self) -> Runner {
        self.info().runner
    }

    /// The chip its probe-rs runner names (`None` under QEMU).
    pub const fn chip(self) -> Option<&'static str> {
        self.info().chip
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

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Board({})", self.name())
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
        "FDGR_FLASH",
    ]
    .into_iter()
    .chain(fw_config::HYPER_VARS)
    {
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
            ("qemu-m4", 4 * k * k, 4 * k * k),
            // program flash: the chip's less the live image's STORE
            ("stm32f4", 256 * k, 128 * k),
            ("nrf52840", 896 * k, 256 * k),
            // BOOT2 (256 B) + FLASH (2 MiB − 128 KiB − 256 B)
            ("rp2040", 1920 * k, 256 * k),
        ];
        for (name, flash, ram) in want {
            let b = Board::parse(name).unwrap();
            assert_eq!(b.memory(&fw()).unwrap(), MemoryMap { flash, ram }, "{b}");
            assert!(b.dir(&fw()).join(".cargo").join("config.toml").is_file());
            assert_eq!(Board::parse(b.name()), Some(b));
        }
        assert_eq!(Board::parse("esp32"), None);
    }

    #[test]
    fn the_boards_from_their_folders() {
        let got: Vec<_> = Board::ALL
            .iter()
            .map(|b| (b.name(), b.package(), b.triple(), b.runner(), b.chip()))
            .collect();
        let (m4, m0) = ("thumbv7em-none-eabihf", "thumbv6m-none-eabi");
        let probe = Runner::ProbeRs;
        assert_eq!(
            got,
            [
                ("qemu-m4", "fdgr-qemu-m4", m4, Runner::Qemu, None),
                ("stm32f4", "fdgr-stm32f4", m4, probe, Some("STM32F411RETx")),
                (
                    "nrf52840",
                    "fdgr-nrf52840",
                    m4,
                    probe,
                    Some("nRF52840_xxAA")
                ),
                ("rp2040", "fdgr-rp2040", m0, probe, Some("RP2040")),
            ]
        );
        assert_eq!(
            Board::ALL[3].describe(),
            "Raspberry Pi Pico (RP2040, Cortex-M0+)"
        );
        assert_eq!(format!("{:?}", Board::ALL[1]), "Board(stm32f4)");
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
