//! Reading within limits: gzip input inflated up to [`inflate_limit`]
//! bytes ([`Capped`]), and the memory checks made before large allocations
//! ([`available_memory`], [`check_alloc`]).

use super::*;
pub use crate::memory::available_memory;

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
