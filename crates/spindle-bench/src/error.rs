//! The suite's one error type: a message saying what failed and where (the script and its
//! count, the program, the file).

use std::fmt;

/// What went wrong: a process that failed or printed the wrong line, a program that is missing
/// or stale, a machine fact that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<mlua::Error> for Error {
    fn from(error: mlua::Error) -> Self {
        Error(error.to_string())
    }
}

impl From<spindle::Error> for Error {
    fn from(error: spindle::Error) -> Self {
        Error(error.to_string())
    }
}

/// A shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
