use std::path::PathBuf;

/// Errors of the runtime library. Every variant names the file, field or step it is about,
/// because the message travels unchanged to the `ctr` user and the shim log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid OCI runtime spec: {message}")]
    SpecParse { file: PathBuf, message: String },
    /// A field holds a value we cannot accept.
    #[error("config.json: {field}: {message}")]
    InvalidField { field: String, message: String },
    /// A field is valid OCI but this runtime does not implement it (yet).
    #[error("config.json: {field}: not supported by io.containerd.rs.v1: {message}")]
    Unsupported { field: String, message: String },
    #[error("{step}: {source}")]
    Sys {
        step: String,
        #[source]
        source: nix::Error,
    },
    /// An OCI hook failed: `field` is `hooks.<kind>[<index>]`.
    #[error("config.json: {field} ({path}): {message}")]
    Hook {
        field: String,
        path: PathBuf,
        message: String,
    },
    /// The systemd cgroup driver: systemd could not be reached, or refused or failed a unit.
    #[error("systemd cgroup driver: {0}")]
    Systemd(String),
    /// The container's init reported a failure while applying the plan.
    #[error("{0}")]
    Init(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unsupported {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn sys(step: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            step: step.into(),
            source,
        }
    }
}
