//! Where a firmware's instructions go: the QEMU plugin's per-address
//! counts (`profile=`, inside the measured steps) summed per function of
//! the ELF's symbol table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Instructions executed in one function, over all measured steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The function (demangled, without the hash), or `?` and the address.
    pub name: String,
    /// Instructions executed in it.
    pub count: u64,
}

/// Reads the plugin's `<hex address> <count>` lines.
pub fn parse(text: &str) -> Result<Vec<(u64, u64)>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let a = it.next().and_then(|a| u64::from_str_radix(a, 16).ok());
            let n = it.next().and_then(|n| n.parse::<u64>().ok());
            match (a, n) {
                (Some(a), Some(n)) => Ok((a, n)),
                _ => Err(format!("bad profile line {l:?}")),
            }
        })
        .collect()
}

/// The per-address counts summed per function symbol of `elf`, most
/// instructions first.
pub fn per_function(elf: &[u8], counts: &[(u64, u64)]) -> Result<Vec<Entry>, String> {
    use object::{Object as _, ObjectSymbol as _, SymbolKind};
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF file: {e}"))?;
    let mut funcs: Vec<(u64, u64, String)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let name = s.name().ok()?;
            Some((s.address() & !1, s.size(), demangle(name)))
        })
        .collect();
    funcs.sort();
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for &(a, n) in counts {
        let i = funcs.partition_point(|f| f.0 <= a);
        let name = match i.checked_sub(1).map(|i| &funcs[i]) {
            Some((start, size, name)) if a < start + size => name.clone(),
            _ => format!("? {a:#x}"),
        };
        *per.entry(name).or_default() += n;
    }
    let mut out: Vec<Entry> = per
        .into_iter()
        .map(|(name, count)| Entry { name, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// A table of `entries` per step (`steps` measured steps), with shares of
/// the total; functions under 0.5 % are summed in one line.
pub fn table(entries: &[Entry], steps: usize) -> String {
    let total: u64 = entries.iter().map(|e| e.count).sum();
    let steps = steps.max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(s, "| function | instructions / step | share |");
    let _ = writeln!(s, "|---|---:|---:|");
    let mut rest = 0;
    for e in entries {
        if (e.count as f64) < 0.005 * total as f64 {
            rest += e.count;
            continue;
        }
        let _ = writeln!(
            s,
            "| `{}` | {:.0} | {:.1} % |",
            e.name,
            e.count as f64 / steps,
            100.0 * e.count as f64 / total.max(1) as f64
        );
    }
    if rest > 0 {
        let _ = writeln!(
            s,
            "| (others, each under 0.5 %) | {:.0} | {:.1} % |",
            rest as f64 / steps,
            100.0 * rest as f64 / total.max(1) as f64
        );
    }
    let _ = writeln!(s, "| total | {:.0} | 100 % |", total as f64 / steps);
    s
}

/// Demangles a legacy Rust symbol (`_ZN…17h<hash>E`) into its path without
/// the hash, with `$LT$`-style escapes undone; other names as they are.
pub fn demangle(name: &str) -> String {
    let Some(body) = name.strip_prefix("_ZN").and_then(|b| b.strip_suffix('E')) else {
        return name.to_string();
    };
    let mut parts = vec![];
    let mut rest = body;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(len) = rest[..digits].parse::<usize>() else {
            return name.to_string();
        };
        let Some(part) = rest.get(digits..digits + len) else {
            return name.to_string();
        };
        // a segment that starts with an escape has a `_` in front
        parts.push(part.strip_prefix("_$").map_or(part, |_| &part[1..]));
        rest = &rest[digits + len..];
    }
    if let Some(last) = parts.last() {
        if last.len() == 17 && last.starts_with('h') {
            parts.pop();
        }
    }
    let mut s = parts.join("::");
    for (from, to) in [
        ("$LT$", "<"),
        ("$GT$", ">"),
        ("$RF$", "&"),
        ("$BP$", "*"),
        ("$C$", ","),
        ("$u20$", " "),
        ("$u27$", "'"),
        ("$u5b$", "["),
        ("$u5d$", "]"),
        ("$u7b$", "{"),
        ("$u7d$", "}"),
        ("$u3b$", ";"),
        ("$u2b$", "+"),
        ("$u22$", "\""),
        ("$SP$", "@"),
        ("..", "::"),
    ] {
        s = s.replace(from, to);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_legacy_names() {
        assert_eq!(
            demangle("_ZN11fdgr_kernel4loss9loss_grad17hff13232f5880dec8E"),
            "fdgr_kernel::loss::loss_grad"
        );
        assert_eq!(
            demangle("_ZN88_$LT$fdgr_kernel..ops..CpuOps$LT$F$C$E$GT$$u20$as$u20$fdgr_kernel..ops..Ops$LT$F$GT$$GT$4gemm17h30201be0f23210ebE"),
            "<fdgr_kernel::ops::CpuOps<F,E> as fdgr_kernel::ops::Ops<F>>::gemm"
        );
        assert_eq!(demangle("fdgr_mark"), "fdgr_mark");
    }

    #[test]
    fn parses_and_tabulates() {
        let c = parse("10 5\n1a 7\n").unwrap();
        assert_eq!(c, vec![(0x10, 5), (0x1a, 7)]);
        assert!(parse("zz 1\n").is_err());
        let t = table(
            &[
                Entry {
                    name: "a".into(),
                    count: 300,
                },
                Entry {
                    name: "b".into(),
                    count: 1,
                },
            ],
            3,
        );
        assert!(t.contains("| `a` | 100 |"), "{t}");
        assert!(t.contains("others"), "{t}");
    }
}
