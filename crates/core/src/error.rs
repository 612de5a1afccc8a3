//! The one error type of the request path. Each variant is one MDE error code; the
//! server maps it to an HTTP status and the `{"error":{...}}` envelope in one place.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    OData(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    InvalidRequestBody(String),
    #[error("Parameter {0} is missing")]
    MissingRequiredParameter(String),
    #[error("Action is already in progress")]
    ActiveRequestAlreadyExists,
    /// The action is final and cannot be changed (e.g. cancelling a succeeded action).
    #[error("{0}")]
    ActionAlreadyFinal(String),
    #[error("{0}")]
    OsPlatformNotSupported(String),
    #[error("{0}")]
    ClientVersionNotSupported(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request line is longer than the server reads (414).
    #[error("{0}")]
    UriTooLong(String),
    /// The request did not arrive, or could not be handled, in the time it is given
    /// (408: the caller may send it again).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Duration,
    },
    /// The store cannot take the request (its disk is full, it is read-only, it cannot
    /// be reached: 503 with `Retry-After`; or it is corrupt: 500). The detail is
    /// logged, never shown.
    #[error("{fault}: {detail}")]
    Storage { fault: StorageFault, detail: String },
    /// Never shown to callers: they get a generic message and the error's target.
    #[error("{0}")]
    Internal(String),
}

/// What is wrong with the store, for an operator: each kind says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageFault {
    /// No space left for a write: frees up when space does.
    Full,
    /// The database or its directory cannot be written (a read-only mount, a
    /// read-only PostgreSQL transaction or standby).
    ReadOnly,
    /// The store answered too late or could not finish (I/O error, busy past its
    /// timeout, a conflict that outlived its retries).
    Unavailable,
    /// The database server cannot be reached (connection refused or lost, no
    /// connection within the wait): callers are answered at once until it can be.
    Unreachable,
    /// The database file is damaged: no retry helps, an operator must act.
    Corrupt,
}

impl StorageFault {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFault::Full => "storage full",
            StorageFault::ReadOnly => "storage read-only",
            StorageFault::Unavailable => "storage unavailable",
            StorageFault::Unreachable => "storage unreachable",
            StorageFault::Corrupt => "storage corrupt",
        }
    }

    /// Whether trying again later can succeed (503) or not (500).
    pub fn is_transient(self) -> bool {
        !matches!(self, StorageFault::Corrupt)
    }

    /// What the caller is told.
    pub fn public_message(self) -> &'static str {
        match self {
            StorageFault::Full => "The server's storage is full; try again later",
            StorageFault::ReadOnly => "The server's storage is read-only; try again later",
            StorageFault::Unavailable | StorageFault::Unreachable => {
                "The server's storage is unavailable; try again later"
            }
            StorageFault::Corrupt => "An internal error occurred",
        }
    }

    /// How long a client should wait before trying again; `None` when it should not.
    pub fn retry_after(self) -> Option<std::time::Duration> {
        match self {
            StorageFault::Full | StorageFault::ReadOnly => Some(std::time::Duration::from_secs(30)),
            StorageFault::Unavailable | StorageFault::Unreachable => {
                Some(std::time::Duration::from_secs(5))
            }
            StorageFault::Corrupt => None,
        }
    }
}

impl std::fmt::Display for StorageFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The MDE error code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::ActionAlreadyFinal(_) => "BadRequest",
            Error::OData(_) => "ODataError",
            Error::InvalidInput(_) => "InvalidInput",
            Error::InvalidRequestBody(_) | Error::PayloadTooLarge(_) => "InvalidRequestBody",
            Error::MissingRequiredParameter(_) => "MissingRequiredParameter",
            Error::ActiveRequestAlreadyExists => "ActiveRequestAlreadyExists",
            Error::OsPlatformNotSupported(_) => "OsPlatformNotSupported",
            Error::ClientVersionNotSupported(_) => "ClientVersionNotSupported",
            Error::Unauthorized(_) => "Unauthorized",
            Error::Forbidden(_) => "Forbidden",
            Error::ResourceNotFound(_) => "ResourceNotFound",
            Error::NotFound(_) => "NotFound",
            Error::MethodNotAllowed(_) | Error::UriTooLong(_) => "BadRequest",
            Error::RequestTimeout(_) => "RequestTimeout",
            Error::TooManyRequests { .. } => "TooManyRequests",
            Error::Storage { fault, .. } if fault.is_transient() => "ServiceUnavailable",
            Error::Storage { .. } => "InternalServerError",
            Error::Internal(_) => "InternalServerError",
        }
    }

    /// The message shown to the caller; internal details are never exposed.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "An internal error occurred".to_string(),
            Error::Storage { fault, .. } => fault.public_message().to_string(),
            other => other.to_string(),
        }
    }

    pub fn storage(fault: StorageFault, detail: impl std::fmt::Display) -> Self {
        Error::Storage {
            fault,
            detail: detail.to_string(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }

    pub fn machine_not_found(id: &str) -> Self {
        Error::ResourceNotFound(format!("Machine {id} was not found"))
    }

    pub fn action_not_found(id: &str) -> Self {
        Error::ResourceNotFound(format!("MachineAction {id} was not found"))
    }

    pub fn alert_not_found(id: &str) -> Self {
        Error::ResourceNotFound(format!(
            "Alert {} was not found",
            crate::ids::truncate(id, 80)
        ))
    }

    pub fn indicator_not_found(id: &str) -> Self {
        Error::ResourceNotFound(format!("Indicator {id} was not found"))
    }
}
