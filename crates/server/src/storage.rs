//! The health of the user store (`[auth] database`) as the HTTP API sees it.
//!
//! A store call that fails (disk full, permissions, I/O error) is logged once with the database
//! path and the operation, answers 503 `storage_unavailable` instead of a bare 500, and makes
//! `/readyz` answer 503 `degraded` naming the path and the error, until a later write succeeds
//! (or, for a failed read, a later read does).

use crate::error::ApiError;
use parking_lot::Mutex;
use switchboard_auth::store::StoreError;

/// Whether a store operation reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The last failure of the user store, if it has not recovered since.
pub struct StoreHealth {
    path: String,
    failure: Mutex<Option<(Access, String)>>,
}

impl StoreHealth {
    /// `label` names the store in messages (`auth.database /var/lib/...`, `cluster store`).
    pub fn new(label: &str) -> StoreHealth {
        StoreHealth {
            path: label.to_string(),
            failure: Mutex::new(None),
        }
    }

    /// `None` when healthy, else what `/readyz` says.
    pub fn degraded(&self) -> Option<String> {
        self.failure
            .lock()
            .as_ref()
            .map(|(_, e)| format!("{}: {e}", self.path))
    }

    /// Records how a store call went and maps a failure to the API's answer.
    pub fn record<T>(
        &self,
        op: &'static str,
        access: Access,
        r: Result<T, StoreError>,
    ) -> Result<T, ApiError> {
        let mut failure = self.failure.lock();
        match r {
            Ok(v) => {
                if failure
                    .as_ref()
                    .is_some_and(|(was, _)| access == Access::Write || *was == Access::Read)
                {
                    tracing::info!(path = %self.path, op, "user store works again");
                    *failure = None;
                }
                Ok(v)
            }
            Err(e) => {
                let message = e.to_string();
                if failure.as_ref().is_none_or(|(_, m)| *m != message) {
                    tracing::error!(path = %self.path, op, error = %message, "user store failed");
                }
                *failure = Some((access, message));
                Err(ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the user store cannot be used right now; retry later",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    fn fail() -> Result<(), StoreError> {
        Err(StoreError::Invalid("database or disk is full".into()))
    }

    #[test]
    fn a_failure_degrades_until_a_write_succeeds() {
        let h = StoreHealth::new("auth.database /var/lib/switchboard/users.db");
        assert_eq!(h.degraded(), None);
        let e = h
            .record("create_session", Access::Write, fail())
            .unwrap_err();
        assert_eq!(e.into_response().status(), 503);
        let d = h.degraded().unwrap();
        assert!(
            d.contains("/var/lib/switchboard/users.db") && d.contains("disk is full"),
            "{d}"
        );
        // A read working does not say the disk has room again.
        h.record("session_user", Access::Read, Ok(())).unwrap();
        assert!(h.degraded().is_some());
        h.record("create_session", Access::Write, Ok(())).unwrap();
        assert_eq!(h.degraded(), None);
        // A failed read recovers with a read.
        let _ = h.record("verify_api_key", Access::Read, fail());
        h.record("verify_api_key", Access::Read, Ok(())).unwrap();
        assert_eq!(h.degraded(), None);
    }
}
