//! The one error type handlers return: an OCI error code (which fixes the HTTP status), a message,
//! and the headers some errors must carry (`Range` on a 416 for an upload, `Content-Range` for a
//! blob). Storage errors are mapped in one exhaustive `match`, so a client's mistake can never fall
//! through to a 500.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oci::ErrorCode;
use serde_json::json;
use storage::{BackendError, StoreError};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Few errors carry headers; a short list keeps the error (returned on every path) small.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Carried in response extensions so the logging middleware can say why a request failed.
#[derive(Clone, Debug)]
pub struct ErrorNote(pub String);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"errors": [{
            "code": self.code.as_str(),
            "message": self.message,
            "detail": null,
        }]});
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        // Every "come back later" says when (the spec's main branch asks it of 429 and 503).
        if matches!(status.as_u16(), 429 | 503) {
            response
                .headers_mut()
                .entry(header::RETRY_AFTER)
                .or_insert(HeaderValue::from_static("5"));
        }
        response
            .extensions_mut()
            .insert(ErrorNote(format!("{}: {}", self.code, self.message)));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        let code = match &e {
            StoreError::BlobUnknown => ErrorCode::BlobUnknown,
            StoreError::UploadUnknown => ErrorCode::BlobUploadUnknown,
            StoreError::UploadBusy => {
                return ApiError::new(ErrorCode::UploadBusy, message)
                    .with_header(header::RETRY_AFTER, 1);
            }
            // The caller's own digest, nothing internal: kept as it is (Retry-After by default).
            StoreError::Collecting(_) => return ApiError::new(ErrorCode::Unavailable, message),
            StoreError::StoredManifestInvalid { .. } => ErrorCode::Unknown,
            StoreError::ManifestUnknown => ErrorCode::ManifestUnknown,
            StoreError::NameUnknown => ErrorCode::NameUnknown,
            StoreError::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            StoreError::UploadOffset { .. } => ErrorCode::RangeInvalid,
            StoreError::SizeMismatch { .. } => ErrorCode::SizeInvalid,
            StoreError::ManifestInvalid(_) | StoreError::ManifestSizeMismatch { .. } => {
                ErrorCode::ManifestInvalid
            }
            StoreError::ManifestTooBig { .. } => ErrorCode::ManifestTooBig,
            StoreError::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            StoreError::Body(_) => ErrorCode::BlobUploadInvalid,
            StoreError::CorruptLink(_) => ErrorCode::Unknown,
            StoreError::Backend(BackendError::NotFound) => ErrorCode::Unknown,
            StoreError::Backend(BackendError::OffsetMismatch { .. }) => ErrorCode::RangeInvalid,
            StoreError::Backend(BackendError::TooLarge { .. }) => ErrorCode::Unknown,
            StoreError::Backend(BackendError::Busy) => ErrorCode::UploadBusy,
            StoreError::Backend(BackendError::Io(_)) => ErrorCode::Unavailable,
        };
        if code.status() >= 500 {
            return ApiError::internal(code, &message);
        }
        ApiError::new(code, message)
    }
}

impl ApiError {
    /// A failure on our side: the client gets the code, a short message and an id; the detail
    /// (storage endpoints, bucket keys, the store's own error text) goes to the log under the
    /// same id, never to the client.
    pub fn internal(code: ErrorCode, detail: &str) -> ApiError {
        let id = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(request_id = %id, error = %detail, "request failed on the registry's side");
        let what = match code {
            ErrorCode::Unavailable => "storage is unavailable; retry shortly",
            _ => "internal error",
        };
        ApiError::new(code, format!("{what} (request id {id})"))
    }
}
