//! The commands of `fdgr`, one module each: its flags (clap) and its
//! printing. Flag groups that several commands share are in [`args`].
//!
//! Every command's `run` first reads and checks all of its input, marking
//! what fails there as bad input ([`fdgr::exit::bad_input`], exit code 2),
//! and only then computes and writes (a failure there exits with 1, a
//! divergence with 3).

/// The exit codes, as every `--help` states them ([`fdgr::exit`]).
macro_rules! exit_codes {
    () => {
        "Exit codes:\n  \
         0  success\n  \
         1  anything else: an output that cannot be written, an internal error\n  \
         2  bad input: a flag, or a data, model or checkpoint file\n  \
         3  training diverged (non-finite loss or gradient)"
    };
}

/// A command's `after_help`: its examples, then the exit codes.
macro_rules! after_help {
    ($examples:literal) => {
        concat!($examples, "\n\n", exit_codes!())
    };
}

pub mod args;
pub mod bench;
pub mod crosscheck;
pub mod device;
pub mod dln;
pub mod eval;
pub mod export;
pub mod flood;
pub mod samples;
pub mod sweep;
pub mod train;

use std::path::PathBuf;
use time::OffsetDateTime;

/// The default output directory of a run started at `now`:
/// `runs/<UTC date>-<UTC time>-<data>-<what>`, e.g.
/// `runs/20250301-142501-mnist5k-fgr` (characters of `data` other than
/// ASCII letters and digits become `_`).
pub fn run_dir(now: OffsetDateTime, data: &str, what: &str) -> PathBuf {
    let t = now.to_offset(time::UtcOffset::UTC);
    let clean: String = data
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("runs").join(format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{clean}-{what}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// [`run_dir`] for a run starting now.
pub fn default_out(data: &str, what: &str) -> PathBuf {
    run_dir(OffsetDateTime::now_utc(), data, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_utc_calendar_times() {
        let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap();
        // 2024-02-29 23:59:59 UTC (a leap day), and the second after it.
        assert_eq!(
            run_dir(at(1_709_251_199), "csv:my data.csv", "fgr"),
            PathBuf::from("runs/20240229-235959-csv_my_data_csv-fgr")
        );
        assert_eq!(
            run_dir(at(1_709_251_200), "mnist5k", "sweep"),
            PathBuf::from("runs/20240301-000000-mnist5k-sweep")
        );
        // Another offset is converted to UTC first.
        let plus2 = at(0).to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(
            run_dir(plus2, "digits", "sgd"),
            PathBuf::from("runs/19700101-000000-digits-sgd")
        );
    }
}
