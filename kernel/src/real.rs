//! The scalar type the kernel computes in: `f32` (devices, host training) or
//! `f64` (reference checks against numerical derivatives).
//!
//! Transcendental functions go through `libm` (pure software, so the same
//! input gives the same bits on x86-64 and on a Cortex-M). With the
//! `micromath` feature, `f32` uses micromath's fast approximations instead;
//! `f64` always uses `libm`.

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar: `f32` or `f64`.
pub trait Real:
    Copy
    + Default
    + Debug
    + PartialOrd
    + PartialEq
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Send
    + Sync
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// 2.
    const TWO: Self;
    /// Size of the type in bytes (for RAM formulas).
    const BYTES: usize;
    /// Converts from `f64` (rounding to nearest).
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Converts a count to this type.
    fn from_usize(n: usize) -> Self;
    /// e^x.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Cosine (used by the cosine learning-rate schedule).
    fn cos(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// True unless NaN or ±∞.
    fn is_finite(self) -> bool;
    /// The larger of two values (NaN-propagating is not guaranteed).
    #[inline]
    fn max(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const TWO: Self = 2.0;
    const BYTES: usize = 8;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_usize(n: usize) -> Self {
        n as f64
    }
    #[inline]
    fn exp(self) -> Self {
        libm::exp(self)
    }
    #[inline]
    fn ln(self) -> Self {
        libm::log(self)
    }
    #[inline]
    fn tanh(self) -> Self {
        libm::tanh(self)
    }
    #[inline]
    fn sqrt(self) -> Self {
        libm::sqrt(self)
    }
    #[inline]
    fn cos(self) -> Self {
        libm::cos(self)
    }
    #[inline]
    fn abs(self) -> Self {
        libm::fabs(self)
    }
    #[inline]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const TWO: Self = 2.0;
    const BYTES: usize = 4;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_usize(n: usize) -> Self {
        n as f32
    }
    #[inline]
    fn exp(self) -> Self {
        f32_math::exp(self)
    }
    #[inline]
    fn ln(self) -> Self {
        f32_math::ln(self)
    }
    #[inline]
    fn tanh(self) -> Self {
        f32_math::tanh(self)
    }
    #[inline]
    fn sqrt(self) -> Self {
        f32_math::sqrt(self)
    }
    #[inline]
    fn cos(self) -> Self {
        libm::cosf(self)
    }
    #[inline]
    fn abs(self) -> Self {
        libm::fabsf(self)
    }
    #[inline]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

#[cfg(not(feature = "micromath"))]
mod f32_math {
    #[inline]
    pub fn exp(x: f32) -> f32 {
        libm::expf(x)
    }
    #[inline]
    pub fn ln(x: f32) -> f32 {
        libm::logf(x)
    }
    #[inline]
    pub fn tanh(x: f32) -> f32 {
        libm::tanhf(x)
    }
    #[inline]
    pub fn sqrt(x: f32) -> f32 {
        libm::sqrtf(x)
    }
}

#[cfg(feature = "micromath")]
mod f32_math {
    use micromath::F32Ext;
    #[inline]
    pub fn exp(x: f32) -> f32 {
        F32Ext::exp(x)
    }
    #[inline]
    pub fn ln(x: f32) -> f32 {
        F32Ext::ln(x)
    }
    /// micromath has no tanh: tanh(x) = 1 − 2/(e^{2x} + 1), clamped where
    /// e^{2x} over/underflows.
    #[inline]
    pub fn tanh(x: f32) -> f32 {
        if x > 9.0 {
            1.0
        } else if x < -9.0 {
            -1.0
        } else {
            1.0 - 2.0 / (F32Ext::exp(2.0 * x) + 1.0)
        }
    }
    #[inline]
    pub fn sqrt(x: f32) -> f32 {
        F32Ext::sqrt(x)
    }
}
