//! The crate's one error type: a gRPC status. Every failure inside the gateway is decided as a
//! [`Status`] where it happens and mapped once to headers/trailers at the edge.

use switchboard_auth::AuthError;

/// gRPC status codes the gateway produces or forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub fn from_i32(v: i32) -> Code {
        use Code::*;
        match v {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// Lower-case label for metrics.
    pub fn label(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "ok",
            Cancelled => "cancelled",
            Unknown => "unknown",
            InvalidArgument => "invalid_argument",
            DeadlineExceeded => "deadline_exceeded",
            NotFound => "not_found",
            AlreadyExists => "already_exists",
            PermissionDenied => "permission_denied",
            ResourceExhausted => "resource_exhausted",
            FailedPrecondition => "failed_precondition",
            Aborted => "aborted",
            OutOfRange => "out_of_range",
            Unimplemented => "unimplemented",
            Internal => "internal",
            Unavailable => "unavailable",
            DataLoss => "data_loss",
            Unauthenticated => "unauthenticated",
        }
    }

    /// The code a gRPC client infers from a non-200 HTTP status (gRPC's HTTP mapping).
    pub fn from_http(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// A gRPC status: what a stream ended with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
    pub fn ok() -> Self {
        Status::new(Code::Ok, "")
    }
    pub fn invalid_argument(m: impl Into<String>) -> Self {
        Status::new(Code::InvalidArgument, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Status::new(Code::Unavailable, m)
    }
    pub fn resource_exhausted(m: impl Into<String>) -> Self {
        Status::new(Code::ResourceExhausted, m)
    }
    pub fn deadline_exceeded() -> Self {
        Status::new(Code::DeadlineExceeded, "deadline exceeded")
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Status::new(Code::Internal, m)
    }
}

impl From<AuthError> for Status {
    /// A genuine ticket without the `grpc` scope is PERMISSION_DENIED; anything else wrong with
    /// the ticket is UNAUTHENTICATED; a full replay guard or an internal fault is UNAVAILABLE.
    fn from(e: AuthError) -> Status {
        let code = match e.http_status() {
            403 => Code::PermissionDenied,
            503 | 500 => Code::Unavailable,
            _ => Code::Unauthenticated,
        };
        Status::new(code, e.to_string())
    }
}
