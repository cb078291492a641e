//! Errors of the GPU backend.

use std::fmt;

/// Why a GPU call did not complete.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuError {
    /// No NVIDIA driver (`libcuda.so`) on this machine: the GPU backend
    /// cannot start. The `String` says what was looked for.
    NoDriver(String),
    /// The driver loaded but there is no usable CUDA device.
    NoDevice(String),
    /// A CUDA library the backend needs (cuBLAS, NVRTC) was not found.
    MissingLibrary(String),
    /// A CUDA driver or cuBLAS call failed.
    Cuda(String),
    /// NVRTC could not compile a kernel source (the message holds its log).
    Compile(String),
    /// The loss or the step direction was NaN or ±∞; the step was rejected
    /// and θ, the momentum buffer and `SgdState` are as before it.
    NonFinite,
    /// A kernel-level error: bad configuration, buffer sizes, labels.
    Kernel(fdgr_kernel::Error),
    /// Invalid input to the GPU API (sizes, indices, labels).
    Input(String),
}

impl GpuError {
    /// True for [`GpuError::NonFinite`]: the step was rejected, nothing else
    /// went wrong (training may continue with a smaller learning rate).
    pub fn is_non_finite(&self) -> bool {
        matches!(self, GpuError::NonFinite)
    }

    /// True when the backend cannot run on this machine at all (no driver,
    /// no device, missing CUDA library).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            GpuError::NoDriver(_) | GpuError::NoDevice(_) | GpuError::MissingLibrary(_)
        )
    }
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoDriver(what) => write!(
                f,
                "GPU backend unavailable: no NVIDIA driver ({what}) found on this machine"
            ),
            GpuError::NoDevice(why) => {
                write!(f, "GPU backend unavailable: no usable CUDA device ({why})")
            }
            GpuError::MissingLibrary(what) => write!(
                f,
                "GPU backend unavailable: {what} not found (set LD_LIBRARY_PATH to the CUDA toolkit's lib64)"
            ),
            GpuError::Cuda(e) => write!(f, "CUDA error: {e}"),
            GpuError::Compile(e) => write!(f, "NVRTC compilation failed: {e}"),
            GpuError::NonFinite => write!(f, "non-finite loss or gradient; step rejected"),
            GpuError::Kernel(e) => write!(f, "{e}"),
            GpuError::Input(e) => write!(f, "invalid input: {e}"),
        }
    }
}

impl std::error::Error for GpuError {}

impl From<fdgr_kernel::Error> for GpuError {
    fn from(e: fdgr_kernel::Error) -> Self {
        match e {
            fdgr_kernel::Error::NonFinite => GpuError::NonFinite,
            e => GpuError::Kernel(e),
        }
    }
}

/// Runs `f`, turning a panic inside cudarc into an error.
pub(crate) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, GpuError>,
) -> Result<T, GpuError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(GpuError::Cuda(format!("{what}: {msg}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_non_finite_is_distinct() {
        let e = GpuError::NoDriver("libcuda.so".into());
        let s = e.to_string();
        assert_eq!(
            s,
            "GPU backend unavailable: no NVIDIA driver (libcuda.so) found on this machine"
        );
        assert!(!s.contains('\n'));
        assert!(e.is_unavailable() && !e.is_non_finite());
        let nf: GpuError = fdgr_kernel::Error::NonFinite.into();
        assert!(nf.is_non_finite());
        let k: GpuError = fdgr_kernel::Error::NoBatch.into();
        assert_eq!(k, GpuError::Kernel(fdgr_kernel::Error::NoBatch));
        assert!(!k.is_non_finite());
    }
}
