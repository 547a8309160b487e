//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic, or mount) and
//! `GET|PATCH|PUT|DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use oci::{Digest, ErrorCode, RepoName};
use storage::{StoreError, UploadId};

use crate::error::ApiError;
use crate::{App, Params, body_stream, response};

pub async fn start(
    app: &App,
    name: &RepoName,
    params: &Params,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(mount) = &params.mount {
        let digest = parse_digest(mount)?;
        if let Some(from) = &params.from {
            let from: RepoName = from
                .parse()
                .map_err(|e| ApiError::new(ErrorCode::NameInvalid, format!("from: {e}")))?;
            if app.store.blob_mount(name, &from, &digest).await? {
                return Ok(response::blob_created(name, &digest));
            }
        }
    }
    let id = app.store.upload_start(name).await?;
    match &params.digest {
        Some(digest) => {
            let digest = parse_digest(digest)?;
            app.store
                .upload_finish(name, id, None, &digest, body_stream(body, app.body_timeout))
                .await?;
            Ok(response::blob_created(name, &digest))
        }
        None => Ok(response::upload_progress(StatusCode::ACCEPTED, name, id, 0)),
    }
}

pub async fn status(app: &App, name: &RepoName, id: &str) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let offset = app.store.upload_offset(name, id).await?;
    Ok(response::upload_progress(
        StatusCode::NO_CONTENT,
        name,
        id,
        offset,
    ))
}

pub async fn patch(
    app: &App,
    name: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let range = match headers.get(header::CONTENT_RANGE) {
        Some(v) => Some(parse_content_range(v.to_str().unwrap_or(""))?),
        None => None,
    };
    let len = content_length(headers)?;
    if let (Some((start, end)), Some(len)) = (range, len)
        && end - start + 1 != len
    {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!(
                "Content-Range covers {} bytes, Content-Length is {len}",
                end - start + 1
            ),
        ));
    }
    let expected = range.map(|(start, end)| end - start + 1).or(len);
    let start = range.map(|(start, _)| start);
    match app
        .store
        .upload_append(
            name,
            id,
            start,
            expected,
            body_stream(body, app.body_timeout),
        )
        .await
    {
        Ok(offset) => Ok(response::upload_progress(
            StatusCode::ACCEPTED,
            name,
            id,
            offset,
        )),
        Err(StoreError::UploadOffset { current }) => {
            Ok(response::upload_offset_mismatch(name, id, current))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn put(
    app: &App,
    name: &RepoName,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let digest = params.digest.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "digest query parameter is required",
        )
    })?;
    let digest = parse_digest(digest)?;
    // A last chunk may say where it goes, as a PATCH does; a wrong start keeps the session.
    let start = match headers.get(header::CONTENT_RANGE) {
        Some(v) => Some(parse_content_range(v.to_str().unwrap_or(""))?.0),
        None => None,
    };
    let body = body_stream(body, app.body_timeout);
    match app
        .store
        .upload_finish(name, id, start, &digest, body)
        .await
    {
        Ok(_) => Ok(response::blob_created(name, &digest)),
        Err(StoreError::UploadOffset { current }) => {
            Ok(response::upload_offset_mismatch(name, id, current))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn cancel(app: &App, name: &RepoName, id: &str) -> Result<Response, ApiError> {
    app.store.upload_cancel(name, parse_id(id)?).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_default())
}

fn parse_id(id: &str) -> Result<UploadId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BlobUploadUnknown,
            "upload id is not one we issued",
        )
    })
}

pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, format!("{s:.80}: {e}")))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::new(ErrorCode::SizeInvalid, "bad Content-Length"))
        })
        .transpose()
}

/// `Content-Range: <start>-<end>` (inclusive), as the spec writes it; `bytes ` and `bytes=`
/// prefixes, which some clients send, are accepted too.
pub fn parse_content_range(value: &str) -> Result<(u64, u64), ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {value:.64?} must be <start>-<end>"),
        )
    };
    let spec = value.trim();
    let spec = spec
        .strip_prefix("bytes ")
        .or_else(|| spec.strip_prefix("bytes="))
        .unwrap_or(spec);
    let spec = spec.split('/').next().unwrap_or(spec);
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99").ok(), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/10").ok(), Some((5, 9)));
        for bad in ["", "5", "9-5", "a-b", "-1-3", "bytes=x"] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }
}
