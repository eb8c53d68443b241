//! The binary's one error type: a single line for the user.

use std::fmt;

/// A failure of a command, printed as `diffinv: <message>`.
#[derive(Debug)]
pub struct CliError(pub String);

pub type CliResult<T> = Result<T, CliError>;

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<diffinv::Error> for CliError {
    fn from(e: diffinv::Error) -> Self {
        CliError(e.to_string())
    }
}

/// `Err(CliError(format!(…)))`.
macro_rules! fail {
    ($($arg:tt)*) => {
        Err($crate::error::CliError(format!($($arg)*)))
    };
}
pub(crate) use fail;
