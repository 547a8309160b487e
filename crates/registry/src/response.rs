//! One constructor per protocol outcome, each setting every header the spec requires for it.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oci::{Digest, RepoName};
use storage::UploadId;

pub const DIGEST_HEADER: &str = "docker-content-digest";
pub const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";
pub const SUBJECT_HEADER: &str = "oci-subject";
pub const FILTERS_HEADER: &str = "oci-filters-applied";

fn value(s: impl AsRef<str>) -> HeaderValue {
    // Every value here is built from validated names, digests and numbers: always visible ASCII.
    HeaderValue::from_str(s.as_ref()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub fn upload_location(name: &RepoName, id: UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>`, with distribution's `0-0` for an empty upload.
fn range_value(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// 202 after an upload starts or a chunk lands; 204 for a status query.
pub fn upload_progress(status: StatusCode, name: &RepoName, id: UploadId, offset: u64) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, value(upload_location(name, id)))
        .header(header::RANGE, value(range_value(offset)))
        .header(UPLOAD_UUID_HEADER, value(id.to_string()))
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap_or_default()
}

/// 416 for a chunk that does not start where the upload ends: tells the client where it does.
pub fn upload_offset_mismatch(name: &RepoName, id: UploadId, offset: u64) -> Response {
    let mut response = crate::error::ApiError::new(
        oci::ErrorCode::RangeInvalid,
        format!("chunk must start at offset {offset}"),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value(upload_location(name, id)));
    headers.insert(header::RANGE, value(range_value(offset)));
    headers.insert(UPLOAD_UUID_HEADER, value(id.to_string()));
    response
}

/// 201 for a blob that now exists in the repository.
pub fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            value(format!("/v2/{name}/blobs/{digest}")),
        )
        .header(DIGEST_HEADER, value(digest.to_string()))
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap_or_default()
}

/// 201 for a stored manifest.
/// 201 for a manifest PUT: where it is, its digest, its subject, and one `OCI-Tag` per tag the
/// PUT's `?tag=` parameters applied.
pub fn manifest_created(name: &RepoName, stored: &storage::PutManifest) -> Response {
    let digest = &stored.digest;
    let mut builder = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            value(format!("/v2/{name}/manifests/{digest}")),
        )
        .header(DIGEST_HEADER, value(digest.to_string()))
        .header(header::CONTENT_LENGTH, "0");
    if let Some(subject) = &stored.subject {
        builder = builder.header(SUBJECT_HEADER, value(subject.to_string()));
    }
    for tag in &stored.tags {
        builder = builder.header("oci-tag", value(tag.to_string()));
    }
    builder.body(Body::empty()).unwrap_or_default()
}

/// 307 to where the client can fetch a blob directly (a presigned storage URL).
pub fn redirect(url: &str, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(header::LOCATION, value(url))
        .header(DIGEST_HEADER, value(digest.to_string()))
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap_or_default()
}

/// 202 with no body, for deletes.
pub fn accepted() -> Response {
    (StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response()
}

/// Content with its length and digest; `head` sends the headers only.
pub fn content(
    status: StatusCode,
    content_type: &str,
    digest: &Digest,
    length: u64,
    body: Body,
    head: bool,
) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, value(content_type))
        .header(header::CONTENT_LENGTH, length)
        .header(DIGEST_HEADER, value(digest.to_string()))
        .header(header::ETAG, value(format!("\"{digest}\"")))
        .body(if head { Body::empty() } else { body })
        .unwrap_or_default()
}

pub fn header_value(s: impl AsRef<str>) -> HeaderValue {
    value(s)
}
