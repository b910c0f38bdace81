//! Command-line flags parsed by hand, as `tether-bench` and `tether-bench-mcp` take them: a flag,
//! then its value as the next argument. A dozen flags each need no parser crate.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::BoxError;
use crate::backend::Backends;

/// The longest timed phase a flag may ask for, in seconds.
const MAX_SECONDS: f64 = 600.0;

/// The process arguments after the program name, one flag and its value at a time.
pub struct Flags(std::env::Args);

impl Flags {
    /// This process's arguments.
    pub fn from_env() -> Self {
        let mut args = std::env::args();
        args.next();
        Self(args)
    }

    /// The next flag, if any.
    pub fn next_flag(&mut self) -> Option<String> {
        self.0.next()
    }

    fn value(&mut self, flag: &str) -> Result<String, BoxError> {
        self.0
            .next()
            .ok_or_else(|| format!("{flag} needs a value").into())
    }

    /// The value of `flag` as a number.
    ///
    /// # Errors
    /// When it is missing or not a number of type `T`.
    pub fn number<T: FromStr>(&mut self, flag: &str) -> Result<T, BoxError> {
        let value = self.value(flag)?;
        value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a valid number").into())
    }

    /// The value of `flag` as seconds (fractions allowed), at most 600.
    ///
    /// # Errors
    /// When it is missing, not a number, or out of range.
    pub fn seconds(&mut self, flag: &str) -> Result<Duration, BoxError> {
        let secs: f64 = self.number(flag)?;
        if !(0.0..=MAX_SECONDS).contains(&secs) {
            return Err(format!("{flag}: must be between 0 and 600 seconds").into());
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// The value of `flag` as a path.
    ///
    /// # Errors
    /// When it is missing.
    pub fn path(&mut self, flag: &str) -> Result<PathBuf, BoxError> {
        self.0
            .next()
            .map(PathBuf::from)
            .ok_or_else(|| format!("{flag} needs a path").into())
    }

    /// The value of `--backend`.
    ///
    /// # Errors
    /// When it is not `sqlite`, `postgres` or `both`.
    pub fn backends(&mut self) -> Result<Backends, BoxError> {
        Backends::parse(self.0.next().as_deref())
    }
}

/// The error for a flag nobody knows.
pub fn unknown(flag: &str) -> BoxError {
    format!("unknown flag {flag:?} (see --help)").into()
}

/// `Ok` when `value` of `flag` lies in `range`, else the error that says so.
///
/// # Errors
/// When it does not.
pub fn within<T: PartialOrd + Display>(
    flag: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), BoxError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!("{flag} must be {}..={}", range.start(), range.end()).into())
    }
}

/// `tether` beside the running binary: `make bench` builds both into `target/release`.
pub fn default_tether() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tether")))
        .unwrap_or_else(|| PathBuf::from("target/release/tether"))
}

/// The `tether` binary at `path`, made absolute: the server runs in a temporary directory, where a
/// relative path would resolve to nothing. `alternative` ends the advice when it is missing (such
/// as `", or --no-server for ..."`).
///
/// # Errors
/// When there is no file at `path`.
pub fn tether_binary(path: &Path, alternative: &str) -> std::io::Result<PathBuf> {
    if !path.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no tether binary at {} (build it with `cargo build --release -p tether-api`, or \
                 pass --tether PATH{alternative})",
                path.display()
            ),
        ));
    }
    std::fs::canonicalize(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_named_in_the_error() {
        assert!(within("--pool", 16, 1..=256).is_ok());
        let e = within("--rate", 0u32, 1..=100_000).unwrap_err();
        assert_eq!(e.to_string(), "--rate must be 1..=100000");
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let e = tether_binary(Path::new("/nonexistent/tether"), ", or --no-server").unwrap_err();
        assert!(
            e.to_string()
                .contains("cargo build --release -p tether-api"),
            "{e}"
        );
        assert!(
            e.to_string().ends_with("--tether PATH, or --no-server)"),
            "{e}"
        );
    }
}
