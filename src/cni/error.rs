//! CNI errors: the spec's well-known codes, printed as JSON on stdout.

use serde::Serialize;

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODE_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
/// ferrynet's own codes (the spec leaves 100 and up to plugins).
pub const FAILED: u32 = 100;
pub const CHECK_FAILED: u32 = 101;

#[derive(Debug, Clone, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn config(msg: impl Into<String>) -> CniError {
        CniError::new(INVALID_CONFIG, msg)
    }

    pub fn env(msg: impl Into<String>) -> CniError {
        CniError::new(INVALID_ENV, msg)
    }

    /// The JSON the runtime reads on stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl From<crate::bridge::DriverError> for CniError {
    fn from(e: crate::bridge::DriverError) -> CniError {
        use crate::bridge::DriverError as D;
        use crate::network::NetworkError as N;
        let code = match &e {
            D::Network(N::Invalid { .. }) => INVALID_CONFIG,
            D::Network(N::Io { .. }) | D::Io { .. } => IO_FAILURE,
            D::Netns(_) => INVALID_ENV,
            D::Netlink { source, .. } if source.is(libc::EAGAIN) || source.is(libc::EBUSY) => {
                TRY_AGAIN_LATER
            }
            _ => FAILED,
        };
        CniError::new(code, e.to_string())
    }
}
