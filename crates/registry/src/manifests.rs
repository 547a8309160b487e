//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use oci::{ErrorCode, Reference, RepoName, Tag};

use crate::error::ApiError;
use crate::{App, response};

pub fn parse_reference(s: &str) -> Result<Reference, ApiError> {
    s.parse().map_err(|e| {
        let code = match e {
            oci::NameError::Digest(_) => ErrorCode::DigestInvalid,
            _ => ErrorCode::TagInvalid,
        };
        ApiError::new(code, format!("reference {s:.80?}: {e}"))
    })
}

/// A reference to read: nothing can exist under a name that is no tag (as distribution and the
/// conformance tests expect), so that is MANIFEST_UNKNOWN; a PUT with one still gets TAG_INVALID.
pub fn parse_get_reference(s: &str) -> Result<Reference, ApiError> {
    match parse_reference(s) {
        Err(e) if e.code == ErrorCode::TagInvalid => {
            Err(ApiError::new(ErrorCode::ManifestUnknown, e.message))
        }
        other => other,
    }
}

pub async fn get(
    app: &App,
    name: &RepoName,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let reference = parse_get_reference(reference)?;
    let m = app.store.manifest_get(name, &reference).await?;
    Ok(respond(m, head))
}

/// A manifest answer; `head` sends the headers only.
pub fn respond(m: storage::ManifestContent, head: bool) -> Response {
    let length = m.body.len() as u64;
    response::content(
        StatusCode::OK,
        &m.media_type,
        &m.digest,
        length,
        Body::from(m.body),
        head,
    )
}

pub async fn put(
    app: &App,
    name: &RepoName,
    reference: &str,
    tags: &[String],
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reference = parse_reference(reference)?;
    let tags = tags
        .iter()
        .map(|t| {
            t.parse::<Tag>()
                .map_err(|e| ApiError::new(ErrorCode::TagInvalid, format!("tag {t:.80?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = app.store.max_manifest();
    let too_big = || {
        ApiError::new(
            ErrorCode::ManifestTooBig,
            format!("manifest is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_big());
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let collect = http_body_util::Limited::new(body, limit_usize).collect();
    let bytes = tokio::time::timeout(app.body_timeout, collect)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest body not received within {:?}", app.body_timeout),
            )
        })?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_big()
            } else {
                ApiError::new(ErrorCode::ManifestInvalid, format!("reading manifest: {e}"))
            }
        })?
        .to_bytes();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let stored = app
        .store
        .manifest_put(name, &reference, &tags, content_type, bytes)
        .await?;
    Ok(response::manifest_created(name, &stored))
}

pub async fn delete(app: &App, name: &RepoName, reference: &str) -> Result<Response, ApiError> {
    let reference = parse_reference(reference)?;
    app.store.manifest_delete(name, &reference).await?;
    Ok(response::accepted())
}
