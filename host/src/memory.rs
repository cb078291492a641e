//! Memory: what a command is about to allocate, checked against what the
//! process may use **before** it allocates, so that an oversized model,
//! batch or data file ends in a clear error (exit code 2) instead of an
//! allocation failure that aborts the process.
//!
//! The budget is the smallest of: the machine's available memory
//! (`MemAvailable` in `/proc/meminfo`), the room left under the process's
//! address-space limit (`ulimit -v`), and the room left in the process's
//! cgroup ([`available_memory`]). `--max-memory SIZE`
//! replaces it (to run anyway where the estimate is too cautious, or
//! to cap a run below what the machine has).
//!
//! Estimates count the large buffers: parameters and every parameter-sized
//! vector of the method and optimizer, the workspace of the largest batch,
//! the copy of the training data a backend keeps, and convolution scratch.
//! Small allocations (names, metrics) are not counted.

use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Evaluation batch size (when its workspace fits [`EVAL_WS_MAX`]).
pub const EVAL_BATCH: usize = 512;
/// Largest workspace (scalars) grown for evaluation batches.
pub const EVAL_WS_MAX: usize = 1 << 26;

static LIMIT: OnceLock<u64> = OnceLock::new();

/// Sets the budget from `--max-memory` (once per process; later calls are
/// ignored).
pub fn set_limit(bytes: u64) {
    let _ = LIMIT.set(bytes);
}

/// Parses a size: bytes, or a number with a unit `K`, `M`, `G`, `T`
/// (powers of 1024; `KiB`, `MB`, `GiB`… accepted alike), e.g. `512M`,
/// `1.5G`, `64GiB`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| anyhow!("'{s}': expected a size such as 4096, 512M, 1.5G or 64GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => return Err(anyhow!("'{s}': unknown unit '{u}' (expected K, M, G or T)")),
    };
    let b = v * mult;
    if !b.is_finite() || b < 1.0 || b >= u64::MAX as f64 {
        return Err(anyhow!("'{s}': expected a positive size below 16 EiB"));
    }
    Ok(b as u64)
}

/// A byte count for messages: `3.4 TiB`, `512.0 MiB`, `980 B`.
pub fn human(b: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// What this process may still allocate, and where that figure comes
/// from: `--max-memory`, else the system's figure
/// ([`available_memory`]: the smallest of `MemAvailable`, the
/// room under `ulimit -v` and under the cgroup's limit); `None` where
/// nothing could be read (then nothing is refused).
pub fn available() -> Option<(u64, &'static str)> {
    if let Some(&b) = LIMIT.get() {
        return Some((b, "--max-memory"));
    }
    available_memory().map(|b| (b, "MemAvailable, ulimit -v and cgroup limits"))
}

/// Refuses (as bad input, exit code 2) to go on when `what` needs more
/// than [`available`] memory; `bytes` is `None` where the size itself
/// overflowed.
pub fn check(what: &str, bytes: Option<u64>) -> Result<()> {
    let Some(bytes) = bytes else {
        return Err(crate::exit::bad_input(anyhow!(
            "{what}: the memory needed overflows a 64-bit size"
        )));
    };
    if let Some((avail, src)) = available() {
        if bytes > avail {
            return Err(crate::exit::bad_input(anyhow!(
                "{what} needs {} of memory, {} available ({src}); use a smaller model or batch, \
                 or --max-memory SIZE to override",
                human(bytes),
                human(avail)
            )));
        }
    }
    Ok(())
}

/// `n` zeros, or an error naming `what` where the allocation fails (a
/// budget overridden with `--max-memory` beyond what the machine has)
/// instead of aborting the process.
pub fn zeros(what: &str, n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        anyhow!(
            "{what}: cannot allocate {} ({n} values)",
            human((n as u64).saturating_mul(4))
        )
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

/// `Σ counts` × 4 bytes (f32), checked.
fn f32s(counts: &[Option<usize>]) -> Option<u64> {
    let mut n: u64 = 0;
    for c in counts {
        n = n.checked_add(u64::try_from((*c)?).ok()?)?;
    }
    n.checked_mul(4)
}

/// Convolution scratch (im2col) of one sample, the largest layer.
fn conv_scratch(model: &fdgr_kernel::model::Model<Vec<fdgr_kernel::model::Node>>) -> Option<usize> {
    use fdgr_kernel::model::Op;
    let mut m = 0usize;
    for n in model.nodes() {
        if let Op::Conv2d { k, groups, .. } = n.op {
            let cols = (n.in_dims.c / groups.max(1))
                .checked_mul(k.checked_mul(k)?)?
                .checked_mul(n.out_dims.hw())?;
            m = m.max(cols.max(n.in_dims.len()));
        }
    }
    Some(m)
}

/// Bytes that training `arch` needs on the CPU backend with batch `batch`,
/// `vectors` parameter-sized vectors (θ, direction, scratch points,
/// optimizer state, amortized correction, the trainer's copies),
/// `train_values` values of training data copied into the backend, the
/// R-pass when `hvp`, and `threads` workers.
pub fn train_bytes(
    arch: &crate::arch::Arch,
    batch: usize,
    vectors: usize,
    hvp: bool,
    train_values: usize,
    threads: usize,
) -> Option<u64> {
    let m = &arch.model;
    let eval_b = EVAL_BATCH;
    let ws = fdgr_kernel::model::checked_workspace_len(&m.sizes, batch.max(1), hvp)?;
    let ws_eval =
        fdgr_kernel::model::checked_workspace_len(&m.sizes, eval_b, hvp).unwrap_or(usize::MAX);
    let ws = if ws_eval <= EVAL_WS_MAX {
        ws.max(ws_eval)
    } else {
        ws
    };
    let scratch = conv_scratch(m)?.checked_mul(batch.max(1))?.checked_mul(2)?;
    let per_thread = conv_scratch(m)?.checked_mul(threads.max(1))?;
    f32s(&[
        m.param_count().checked_mul(vectors),
        Some(ws),
        Some(train_values),
        m.input.len().checked_mul(batch),
        Some(scratch),
        Some(per_thread),
    ])
}

/// Bytes that evaluating (or exporting) `arch` needs: θ, running
/// statistics, and the evaluation workspace.
pub fn eval_bytes(arch: &crate::arch::Arch) -> Option<u64> {
    let m = &arch.model;
    let b = EVAL_BATCH;
    let ws = match fdgr_kernel::model::checked_workspace_len(&m.sizes, b, false) {
        Some(w) if w <= EVAL_WS_MAX => w,
        _ => fdgr_kernel::model::checked_workspace_len(&m.sizes, 32, false)?,
    };
    f32s(&[
        m.param_count().checked_mul(2),
        Some(m.sizes.state),
        Some(ws),
        conv_scratch(m)?.checked_mul(32),
    ])
}

/// Bytes of memory this process can still allocate, as far as the system
/// tells: the smallest of the kernel's estimate of available memory
/// (`MemAvailable` in `/proc/meminfo`), the room left under the process's
/// address-space limit (`ulimit -v`), and the room left under its control
/// group's memory limit (cgroup v2 `memory.max` or v1
/// `memory.limit_in_bytes`, its page cache counted as free).
/// `None` where none of these can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mem = read("/proc/meminfo").and_then(|t| kib_field(&t, "MemAvailable:"));
    let address_space = read("/proc/self/limits")
        .and_then(|t| address_space_limit(&t))
        .map(|lim| {
            let used = read("/proc/self/status")
                .and_then(|t| kib_field(&t, "VmSize:"))
                .unwrap_or(0);
            lim.saturating_sub(used)
        });
    let cgroup =
        read("/proc/self/cgroup").and_then(|t| cgroup_room(&t, Path::new("/sys/fs/cgroup")));
    [mem, address_space, cgroup].into_iter().flatten().min()
}

/// `key   N kB` of `/proc/meminfo` or `/proc/self/status`, in bytes.
pub(crate) fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft address-space limit of `/proc/self/limits`, in bytes; `None`
/// when unlimited.
pub(crate) fn address_space_limit(text: &str) -> Option<u64> {
    let key = "Max address space";
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The room left under the memory limit of this process's control group
/// (`/proc/self/cgroup`'s text): limit − (usage − page cache), the page
/// cache (active and inactive file pages) being reclaimable.
/// `None` when there is no limit or it cannot be read. `mount`: where the
/// control groups are mounted (`/sys/fs/cgroup`).
pub(crate) fn cgroup_room(cgroups: &str, mount: &Path) -> Option<u64> {
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).ok();
    let stat = |d: &Path, key: &str| {
        read(d, "memory.stat").and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
        })
    };
    // the process's own group, else the root of the mount (a container's
    // view of its own group)
    let dirs = |root: PathBuf, rel: &str| [root.join(rel.trim_start_matches('/')), root];
    // limit, usage and page cache of a group directory (v2 or v1 names)
    let room = |d: &Path, [max, used, active, inactive]: [&str; 4]| -> Option<u64> {
        // no limit: "max" (v2), a huge number (v1)
        let max: u64 = read(d, max)?.trim().parse().ok().filter(|&m| m < 1 << 60)?;
        let used: u64 = read(d, used)?.trim().parse().ok()?;
        let cache = stat(d, active)
            .unwrap_or(0)
            .saturating_add(stat(d, inactive).unwrap_or(0));
        Some(max.saturating_sub(used.saturating_sub(cache)))
    };
    let v2 = [
        "memory.max",
        "memory.current",
        "active_file ",
        "inactive_file ",
    ];
    let v1 = [
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        "total_active_file ",
        "total_inactive_file ",
    ];
    let mut found = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (root, names) = if id == "0" && ctrl.is_empty() {
            (mount.to_path_buf(), v2)
        } else if ctrl.split(',').any(|c| c == "memory") {
            (mount.join("memory"), v1)
        } else {
            continue;
        };
        let r = dirs(root, rel)
            .into_iter()
            .find(|d| d.join(names[0]).is_file())
            .and_then(|d| room(&d, names));
        found = found.into_iter().chain(r).min();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("64GiB").unwrap(), 64 << 30);
        assert_eq!(parse_size("2t").unwrap(), 2 << 40);
        for bad in ["", "G", "-1G", "1X", "0", "1e30", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human(980), "980 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn estimates_are_checked() {
        let a = crate::arch::Arch::parse(
            "64-32-10",
            fdgr_kernel::Act::Tanh,
            fdgr_kernel::model::Dims::flat(64),
            10,
        )
        .unwrap();
        let b = train_bytes(&a, 128, 4, false, 64 * 1000, 2).unwrap();
        // θ-sized vectors, the data and the workspace: tens of KiB to a few MiB
        assert!(b > 4 * 2410 * 4 + 64 * 1000 * 4 && b < 8 << 20, "{b}");
        assert!(eval_bytes(&a).unwrap() > 2410 * 4);
        // a batch that overflows the workspace size
        assert_eq!(train_bytes(&a, usize::MAX / 2, 4, false, 0, 2), None);
    }
}
