//! The exit codes of `fdgr`, and which one an error gets.
//!
//! | code | meaning |
//! |---|---|
//! | [`SUCCESS`] 0 | success |
//! | [`FAILURE`] 1 | anything else: an output that cannot be written, an internal error |
//! | [`BAD_INPUT`] 2 | bad input: a flag, or a data, model or checkpoint file |
//! | [`DIVERGED`] 3 | training diverged (non-finite loss or gradient) |
//!
//! Every command reads and checks all of its input before it computes or
//! writes anything, and marks what fails there with [`bad_input`]. An error
//! found later is bad input only where it is marked so (for example a
//! corrupt row of a sweep being resumed); a [`Diverged`] error anywhere
//! gives 3; everything else gives 1. (Errors of clap's own flag parsing
//! exit with 2 from clap.)

use std::fmt;

/// Success.
pub const SUCCESS: u8 = 0;
/// Anything else: an output that cannot be written, an internal error.
pub const FAILURE: u8 = 1;
/// Bad input: a flag, or a data, model or checkpoint file.
pub const BAD_INPUT: u8 = 2;
/// Training diverged (non-finite loss or gradient).
pub const DIVERGED: u8 = 3;

/// A run that stopped because a step was non-finite (exit code
/// [`DIVERGED`]).
#[derive(Debug)]
pub struct Diverged(pub String);

impl fmt::Display for Diverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Diverged {}

/// An error caused by the command's input (exit code [`BAD_INPUT`]).
///
/// Transparent: it shows the wrapped error's message and continues with
/// the wrapped error's sources, so `{:#}` prints exactly what the wrapped
/// error would.
#[derive(Debug)]
pub struct BadInput(anyhow::Error);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BadInput {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A process of a data-parallel job that stops because another one
/// failed and said why: exit code `.0`, and nothing more to print.
#[derive(Debug)]
pub struct Silent(pub u8);

impl fmt::Display for Silent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stopped with exit code {}: another process of the job failed (see its message)",
            self.0
        )
    }
}

impl std::error::Error for Silent {}

/// Whether `e` needs no message (see [`Silent`]).
pub fn is_silent(e: &anyhow::Error) -> bool {
    has::<Silent>(e)
}

fn has<T: std::error::Error + Send + Sync + 'static>(e: &anyhow::Error) -> bool {
    e.downcast_ref::<T>().is_some() || e.chain().any(|c| c.is::<T>())
}

/// Marks `e` as caused by the input (exit code [`BAD_INPUT`]); a
/// divergence stays a divergence.
pub fn bad_input(e: anyhow::Error) -> anyhow::Error {
    if has::<BadInput>(&e) || has::<Diverged>(&e) {
        e
    } else {
        anyhow::Error::new(BadInput(e))
    }
}

/// The exit code for `e`: [`DIVERGED`], [`BAD_INPUT`] or [`FAILURE`].
pub fn code(e: &anyhow::Error) -> u8 {
    if let Some(Silent(c)) = e.downcast_ref::<Silent>() {
        *c
    } else if has::<Diverged>(e) {
        DIVERGED
    } else if has::<BadInput>(e) {
        BAD_INPUT
    } else {
        FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn codes_follow_the_marks() {
        assert_eq!(code(&anyhow!("disk full")), FAILURE);
        assert_eq!(code(&bad_input(anyhow!("--lr -1"))), BAD_INPUT);
        let d: anyhow::Error = Diverged("diverged".into()).into();
        assert_eq!(code(&d), DIVERGED);
        // Context on top keeps the mark; marking a divergence keeps it one.
        assert_eq!(code(&bad_input(anyhow!("x")).context("y")), BAD_INPUT);
        assert_eq!(code(&Err::<(), _>(d).context("z").unwrap_err()), DIVERGED);
        let d: anyhow::Error = Diverged("diverged".into()).into();
        assert_eq!(code(&bad_input(d)), DIVERGED);
    }

    #[test]
    fn marking_does_not_change_the_message() {
        let e = Err::<(), _>(anyhow!("inner")).context("outer").unwrap_err();
        let want = format!("{e:#}");
        let m = bad_input(e);
        assert_eq!(format!("{m:#}"), want);
        assert_eq!(format!("{:#}", bad_input(m)), want);
    }
}
