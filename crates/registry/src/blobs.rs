//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`, with single byte ranges.

use std::ops::Range;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use oci::{Digest, ErrorCode, RepoName};

use crate::App;
use crate::error::ApiError;
use crate::response;

pub async fn get(
    app: &App,
    name: &RepoName,
    digest: &Digest,
    req: &Parts,
    head: bool,
) -> Result<Response, ApiError> {
    let size = app.store.blob_size(name, digest).await?;
    serve(app, digest, size, req, head).await
}

/// A blob the repository holds, of `size` bytes (already looked up).
pub async fn serve(
    app: &App,
    digest: &Digest,
    size: u64,
    req: &Parts,
    head: bool,
) -> Result<Response, ApiError> {
    if app.redirect
        && !head
        && let Some(url) = presigned(app, digest).await
    {
        return Ok(response::redirect(&url, digest));
    }
    let range = requested_range(&req.headers, size)?;
    let body = if head {
        Body::empty()
    } else {
        content(app, digest, size, range.clone(), req).await?
    };
    Ok(respond(digest, size, range, body, head))
}

/// The body of a blob GET: sent by the kernel straight from its file where storage is a
/// filesystem and the connection can (`serve::ZeroCopy`), streamed from storage otherwise.
async fn content(
    app: &App,
    digest: &Digest,
    size: u64,
    range: Option<Range<u64>>,
    req: &Parts,
) -> Result<Body, ApiError> {
    if app.sendfile
        && let Some(zero_copy) = req
            .extensions
            .get::<serve::ZeroCopy>()
            .filter(|z| z.available())
        && let Some(file) = app.store.blob_file(digest).await?
    {
        let range = range.unwrap_or(0..size);
        return Ok(Body::new(zero_copy.file(std::sync::Arc::new(file), range)));
    }
    Ok(Body::from_stream(app.store.blob_get(digest, range).await?))
}

/// The request's `Range` checked against a blob of `size` bytes; `None`: the whole blob.
pub fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    parse_range(value.to_str().unwrap_or(""), size)
        .map(Some)
        .map_err(|msg| {
            ApiError::new(ErrorCode::RangeInvalid, msg)
                .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
        })
}

/// A blob answer: 200, or 206 with its `Content-Range`.
pub fn respond(
    digest: &Digest,
    size: u64,
    range: Option<Range<u64>>,
    body: Body,
    head: bool,
) -> Response {
    let (status, length) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, size),
    };
    let mut response = response::content(
        status,
        "application/octet-stream",
        digest,
        length,
        body,
        head,
    );
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, response::header_value("bytes"));
    if let Some(r) = range {
        let value = format!("bytes {}-{}/{size}", r.start, r.end - 1);
        headers.insert(header::CONTENT_RANGE, response::header_value(value));
    }
    response
}

/// A presigned URL, or `None` to stream the blob ourselves (signing failed: logged, not fatal).
async fn presigned(app: &App, digest: &Digest) -> Option<String> {
    match app.store.blob_url(digest).await {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(%digest, error = %e, "cannot presign; streaming the blob instead");
            None
        }
    }
}

pub async fn delete(app: &App, name: &RepoName, digest: &Digest) -> Result<Response, ApiError> {
    app.store.blob_delete(name, digest).await?;
    Ok(response::accepted())
}

/// Parses one `bytes=` range (RFC 9110 §14.1.2) against a resource of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> Result<Range<u64>, String> {
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or("Range must be bytes=<first>-<last>")?;
    if spec.contains(',') {
        return Err("multiple ranges are not supported".into());
    }
    let (first, last) = spec.split_once('-').ok_or("Range must contain '-'")?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad number {s:?}"))
    };
    let range = if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 {
            return Err("empty suffix range".into());
        }
        size.saturating_sub(suffix)..size
    } else {
        let start = number(first)?;
        let end = if last.is_empty() {
            size
        } else {
            let last = number(last)?;
            if last < start {
                return Err("range ends before it starts".into());
            }
            last.saturating_add(1).min(size)
        };
        start..end
    };
    if range.start >= size {
        return Err(format!("range starts past the end of a {size}-byte blob"));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Ok(0..1));
        assert_eq!(parse_range("bytes=2-", 10), Ok(2..10));
        assert_eq!(parse_range("bytes=-3", 10), Ok(7..10));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(5..10));
        assert_eq!(parse_range("bytes=-100", 10), Ok(0..10));
        for bad in [
            "bytes=10-",
            "bytes=5-4",
            "bytes=a-b",
            "0-5",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=-",
            "bytes=99999999999999999999-",
        ] {
            assert!(parse_range(bad, 10).is_err(), "{bad}");
        }
        assert!(parse_range("bytes=0-", 0).is_err());
    }
}
