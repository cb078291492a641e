//! The results table (flash, RAM, stack and instructions per step) and the
//! budgets checked against it.

use super::*;

/// Whether `r` is the M4F, libm, all-parameter, plain-SGD run of
/// `method` on the MLP (`conv`: on the conv net).
fn is_base_of(r: &Measured, method: &str, conv: bool) -> bool {
    r.v.method.name() == method
        && r.v.opt == 0
        && r.v.mode == Mode::Full
        && !r.v.micromath
        && r.v.triple == M4F
        && r.v.conv == conv
}

pub(super) fn results_table(
    results: &[Measured],
    boards: &[(&str, &str, bool, ElfInfo)],
    p: u64,
    conv_p: u64,
    qemu: (u32, u32),
) -> Result<String, String> {
    let mut s = String::new();
    let base = |m: &str, conv: bool| results.iter().find(|r| is_base_of(r, m, conv));
    let sgd = base("sgd", false)
        .map(|r| mean(&r.instr))
        .ok_or("no sgd result")?;
    let conv_sgd = base("sgd", true)
        .map(|r| mean(&r.instr))
        .ok_or("no conv sgd result")?;
    let _ = writeln!(
        s,
        "| example | model | method | optimizer | trained | flash (B) | static RAM .data+.bss (B) | peak stack (B) | RAM total (B) | guest instructions / step: mean (min–max) | × SGD |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (model, np, base_sgd) = if r.v.conv {
            ("conv 8-16", conv_p, conv_sgd)
        } else {
            ("MLP 64-32-10", p, sgd)
        };
        let trained = match (r.v.mode, r.v.conv) {
            (Mode::Full, _) => format!("all {np}"),
            (Mode::LAST_LAYER, false) => "last layer".to_string(),
            (Mode::LAST_LAYER, true) => "head (650; conv stack frozen in flash)".to_string(),
            (Mode::Bias, _) => format!("biases ({}; weights frozen in flash)", r.v.trained),
            (m, _) => format!("{m} ({})", r.v.trained),
        };
        let _ = writeln!(
            s,
            "| qemu-m4 ({}{}) | {model} | {} | {} | {} | {} | {} | {} | {} | {:.0} ({}–{}) | {} |",
            if r.v.triple == V6M {
                "thumbv6m, soft float"
            } else {
                "M4F"
            },
            if r.v.micromath { ", micromath" } else { "" },
            r.v.method.name(),
            fw_config::OPTIMIZER_NAMES[r.v.opt],
            trained,
            r.elf.flash,
            r.elf.ram,
            r.stack,
            r.elf.ram + r.stack,
            mean(&r.instr),
            r.instr.iter().min().copied().unwrap_or(0),
            r.instr.iter().max().copied().unwrap_or(0),
            if r.v.triple == M4F {
                format!("{:.2}", mean(&r.instr) / base_sgd)
            } else {
                "—".to_string()
            }
        );
    }
    for (board, triple, conv, e) in boards {
        let _ = writeln!(
            s,
            "| {board} ({triple}) | {} | fgr | sgd | all {} | {} | {} | not measured (needs hardware) | — | not measured ({} cycles are logged on hardware) | — |",
            if *conv { "conv 8-16" } else { "MLP 64-32-10" },
            if *conv { conv_p } else { p },
            e.flash,
            e.ram,
            if *triple == V6M { "SysTick" } else { "DWT" }
        );
    }
    let fgr = base("fgr", false).ok_or("no fgr result")?;
    let _ = writeln!(
        s,
        "\nBatch 1, 64 steps on 64 held-out digits samples (test split); fdgr's own buffers for full F-GR: {} B \
         (θ, d, point = 3P floats + workspace + batch + ring). Budgets: SGD ≤ {SGD_BUDGET:.0} \
         instructions (measured {sgd:.0}; AIfES 2.2.0: {AIFES_SGD_INSTR}, {:.1}× more); F-GR ≤ \
         {FGR_RATIO_BUDGET}× SGD (measured {:.2}×); RAM ≤ 3·4P + 8 KiB = {} B (measured {} B); \
         flash ≤ {FLASH_BUDGET} B (measured {} B).",
        fgr.fdgr_ram,
        AIFES_SGD_INSTR as f64 / sgd,
        mean(&fgr.instr) / sgd,
        12 * p + RAM_SLACK,
        fgr.elf.ram + fgr.stack,
        fgr.elf.flash
    );
    let cfgr = base("fgr", true).ok_or("no conv fgr result")?;
    let _ = writeln!(
        s,
        "\nConv net `{CONV_SPEC}` ({conv_p} parameters): SGD {conv_sgd:.0} instructions per step \
         (budget {CONV_SGD_BUDGET:.0}; AIfES 2.2.0 plain SGD: {AIFES_CONV_SGD_INSTR}, {:.1}× more), \
         full F-GR {:.0} (budget {CONV_FGR_BUDGET:.0}, {:.2}× SGD), full F-GR RAM {} B (static {} + \
         stack {}; budget < AIfES's {AIFES_CONV_RAM} B for SGD), flash {} B (budget \
         {CONV_FLASH_BUDGET} B).",
        AIFES_CONV_SGD_INSTR as f64 / conv_sgd,
        mean(&cfgr.instr),
        mean(&cfgr.instr) / conv_sgd,
        cfgr.elf.ram + cfgr.stack,
        cfgr.elf.ram,
        cfgr.stack,
        cfgr.elf.flash
    );
    let _ = writeln!(
        s,
        "Measured with `cargo xtask firmware`: QEMU {}.{} `mps2-an386`, instructions counted by \
         a TCG plugin (`firmware-examples/qemu-icount`) between calls of `fdgr_mark` around each \
         `push_and_step`, minus the marker's own cost; sizes from the ELF section headers; peak \
         stack by stack painting.",
        qemu.0, qemu.1
    );
    Ok(s)
}

pub(super) fn check_budgets(
    results: &[Measured],
    boards: &[(&str, &str, bool, ElfInfo)],
    p: u64,
) -> Result<(), String> {
    let find = |m: &str, conv: bool| results.iter().find(|r| is_base_of(r, m, conv));
    let (Some(sgd), Some(fgr), Some(csgd), Some(cfgr)) = (
        find("sgd", false),
        find("fgr", false),
        find("sgd", true),
        find("fgr", true),
    ) else {
        return Err("missing sgd or fgr results".into());
    };
    let mut bad = vec![];
    let s = mean(&sgd.instr);
    if s > SGD_BUDGET {
        bad.push(format!("SGD step {s:.0} > {SGD_BUDGET:.0} instructions"));
    }
    let ratio = mean(&fgr.instr) / s;
    if ratio > FGR_RATIO_BUDGET {
        bad.push(format!("F-GR step {ratio:.2}× SGD > {FGR_RATIO_BUDGET}×"));
    }
    let ram = fgr.elf.ram + fgr.stack;
    if ram > 12 * p + RAM_SLACK {
        bad.push(format!(
            "F-GR RAM {ram} B > 3·4·{p} + 8 KiB = {} B",
            12 * p + RAM_SLACK
        ));
    }
    let cs = mean(&csgd.instr);
    if cs > CONV_SGD_BUDGET {
        bad.push(format!(
            "conv SGD step {cs:.0} > {CONV_SGD_BUDGET:.0} instructions"
        ));
    }
    let cf = mean(&cfgr.instr);
    if cf > CONV_FGR_BUDGET {
        bad.push(format!(
            "conv F-GR step {cf:.0} > {CONV_FGR_BUDGET:.0} instructions"
        ));
    }
    let cram = cfgr.elf.ram + cfgr.stack;
    if cram >= AIFES_CONV_RAM {
        bad.push(format!(
            "conv F-GR RAM {cram} B ≥ AIfES's {AIFES_CONV_RAM} B"
        ));
    }
    // (the budgets are the SGD builds'; Adam's rows are reported)
    for r in results
        .iter()
        .filter(|r| !r.v.micromath && r.v.triple == M4F && r.v.opt == 0)
    {
        let budget = if r.v.conv {
            CONV_FLASH_BUDGET
        } else {
            FLASH_BUDGET
        };
        if r.elf.flash > budget {
            bad.push(format!(
                "qemu-m4 {} flash {} B > {} KiB",
                r.v.name(),
                r.elf.flash,
                budget / 1024
            ));
        }
    }
    for (b, _, conv, e) in boards {
        let budget = if *conv {
            CONV_FLASH_BUDGET
        } else {
            FLASH_BUDGET
        };
        if e.flash > budget {
            bad.push(format!(
                "{b}{} flash {} B > {} KiB",
                if *conv { " (conv net)" } else { "" },
                e.flash,
                budget / 1024
            ));
        }
    }
    if bad.is_empty() {
        println!(
            "budgets met: SGD ≤ {SGD_BUDGET:.0} instructions, F-GR ≤ {FGR_RATIO_BUDGET}× SGD, RAM ≤ \
             3·4P + 8 KiB, flash ≤ {} KiB; conv net: SGD ≤ {CONV_SGD_BUDGET:.0}, F-GR ≤ \
             {CONV_FGR_BUDGET:.0} instructions, F-GR RAM < {AIFES_CONV_RAM} B, flash ≤ {} KiB",
            FLASH_BUDGET / 1024,
            CONV_FLASH_BUDGET / 1024
        );
        Ok(())
    } else {
        Err(format!("firmware budgets missed: {}", bad.join("; ")))
    }
}
