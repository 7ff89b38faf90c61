use std::fmt;

/// What went wrong; bindings map `Invalid` to ValueError and `Io` to OSError.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Invalid(String),
    /// The operating system refused a read or write. `code` is the raw OS error number when
    /// there is one, so bindings can raise the matching OSError subclass.
    Io {
        message: String,
        code: Option<i32>,
    },
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// An I/O failure, with what was being done when it happened.
    pub fn io(context: impl fmt::Display, e: &std::io::Error) -> Self {
        Error::Io { message: format!("{context}: {e}"), code: e.raw_os_error() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) => f.write_str(m),
            Error::Io { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
