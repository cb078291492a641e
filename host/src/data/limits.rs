//! Reading within limits: gzip input inflated up to [`inflate_limit`]
//! bytes ([`Capped`]), and the memory checks made before large allocations
//! ([`available_memory`], [`check_alloc`]).

use super::*;

/// Reads a file fully, un-gzipping it when it starts with the gzip magic
/// (at most [`inflate_limit`] bytes).
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    if let Ok(m) = std::fs::metadata(path) {
        check_alloc(&format!("{name}: reading the file"), m.len())?;
    }
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read"))?;
    gunzip_if(bytes, &name)
}

pub(super) fn gunzip_if(bytes: Vec<u8>, name: &str) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let limit = inflate_limit()?;
        let mut out = Vec::new();
        Capped::new(flate2::read::MultiGzDecoder::new(&bytes[..]), limit)
            .read_to_end(&mut out)
            .map_err(|e| match too_large(&e) {
                Some(t) => anyhow::anyhow!("{name}: {t}"),
                None => anyhow::Error::new(e)
                    .context(format!("{name}: corrupt or truncated gzip stream")),
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Default ceiling of [`inflate_limit`]: 8 GiB.
pub const INFLATE_CEILING: u64 = 8 << 30;

/// The environment variable that sets [`inflate_limit`], in MiB.
pub const INFLATE_LIMIT_ENV: &str = "FDGR_INFLATE_LIMIT_MIB";

/// The limit on decompressed data, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflateLimit {
    /// Bytes.
    pub bytes: u64,
    /// Set by [`INFLATE_LIMIT_ENV`] (else the default).
    pub from_env: bool,
}

/// The most bytes that one gzip-compressed input (a file, or the whole
/// stream of a `.tar.gz` archive) may inflate to: `FDGR_INFLATE_LIMIT_MIB`
/// MiB when that environment variable is set, else the smaller of
/// [`INFLATE_CEILING`] (8 GiB) and half the [`available_memory`] (half: a
/// buffer that grows while it is filled may briefly need twice its size),
/// or 8 GiB when the available memory is unknown.
pub fn inflate_limit() -> Result<InflateLimit> {
    if let Some(v) = std::env::var_os(INFLATE_LIMIT_ENV) {
        let v = v.to_string_lossy();
        let mib: u64 = v.trim().parse().ok().filter(|&m| m > 0).with_context(|| {
            format!(
                "{INFLATE_LIMIT_ENV}={}: expected a positive whole number of MiB",
                printable(&v, 40)
            )
        })?;
        let bytes = mib
            .checked_mul(1 << 20)
            .with_context(|| format!("{INFLATE_LIMIT_ENV}={mib}: too large"))?;
        return Ok(InflateLimit {
            bytes,
            from_env: true,
        });
    }
    let bytes =
        crate::memory::available().map_or(INFLATE_CEILING, |(a, _)| (a / 2).min(INFLATE_CEILING));
    Ok(InflateLimit {
        bytes,
        from_env: false,
    })
}

/// The error of a decompressed stream longer than its [`InflateLimit`].
#[derive(Debug)]
pub(crate) struct TooLarge(InflateLimit);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "inflates to more than {} MiB (the limit on decompressed data{})",
            self.0.bytes >> 20,
            if self.0.from_env {
                format!(", set by {INFLATE_LIMIT_ENV}")
            } else {
                format!(": the smaller of 8 GiB and half the available memory; set {INFLATE_LIMIT_ENV} to change it")
            }
        )
    }
}

impl std::error::Error for TooLarge {}

/// The [`TooLarge`] error inside `e`, if that is what it is.
pub(crate) fn too_large(e: &std::io::Error) -> Option<&TooLarge> {
    e.get_ref().and_then(|i| i.downcast_ref::<TooLarge>())
}

/// A reader that fails with [`TooLarge`] once more than its limit has
/// come out of `inner` (a decompressor).
pub(crate) struct Capped<R> {
    inner: R,
    left: u64,
    limit: InflateLimit,
}

impl<R> Capped<R> {
    /// At most `limit.bytes` bytes of `inner`.
    pub(crate) fn new(inner: R, limit: InflateLimit) -> Self {
        Capped {
            inner,
            left: limit.bytes,
            limit,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.left = 0;
                Err(std::io::Error::other(TooLarge(self.limit)))
            }
        }
    }
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
pub(super) fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft address-space limit of `/proc/self/limits`, in bytes; `None`
/// when unlimited.
pub(super) fn address_space_limit(text: &str) -> Option<u64> {
    let key = "Max address space";
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The room left under the memory limit of this process's control group
/// (`/proc/self/cgroup`'s text): limit − (usage − page cache), the page
/// cache (active and inactive file pages) being reclaimable.
/// `None` when there is no limit or it cannot be read. `mount`: where the
/// control groups are mounted (`/sys/fs/cgroup`).
pub(super) fn cgroup_room(cgroups: &str, mount: &Path) -> Option<u64> {
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

/// `bytes` in GiB (MiB below 1 GiB), for messages.
fn size_str(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Checks, before `bytes` bytes are allocated for `what`, that that much
/// memory is available ([`available_memory`]); passes where the
/// available memory is unknown. Errors "`what` needs X GiB, Y GiB
/// available".
pub fn check_alloc(what: &str, bytes: u64) -> Result<()> {
    check_alloc_within(what, bytes, crate::memory::available().map(|(b, _)| b))
}

/// [`check_alloc`] against `available` bytes.
pub(super) fn check_alloc_within(what: &str, bytes: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(a) if bytes > a => bail!(
            "{what} needs {}, {} available (--max-memory SIZE overrides)",
            size_str(bytes),
            size_str(a)
        ),
        _ => Ok(()),
    }
}

/// [`check_alloc`] for `count` items of `each` bytes (sizes computed with
/// checked arithmetic).
pub(crate) fn check_items(what: &str, count: usize, each: u64) -> Result<()> {
    let bytes = u64::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(each))
        .with_context(|| format!("{what}: {count} items of {each} bytes overflow a 64-bit size"))?;
    check_alloc(what, bytes)
}
