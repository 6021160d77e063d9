//! The one error type of the API boundary: an HTTP status and a message that names the problem.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(400, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(403, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(404, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(409, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(500, m)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(format!("the change was not made: {e}"))
    }
}

impl From<crate::ipam::IpamError> for ApiError {
    fn from(e: crate::ipam::IpamError) -> Self {
        use crate::ipam::IpamError::*;
        match e {
            InUse(_) | Exhausted(_) => ApiError::forbidden(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<crate::provision::ProvisionError> for ApiError {
    fn from(e: crate::provision::ProvisionError) -> Self {
        use crate::provision::ProvisionError::*;
        match e {
            NoSandbox(..) => ApiError::not_found(e.to_string()),
            NotNetns(_) | HostNamespace(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(serde_json::json!({ "message": self.message }))).into_response()
    }
}
