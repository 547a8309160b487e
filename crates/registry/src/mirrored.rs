//! Requests for mirrored repositories (the `mirror` crate): manifests and blobs answered from the
//! cache or through it from the upstream, tags and referrers from what is cached, writes refused.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use mirror::{BlobSource, Fetch, Mirror, MirrorError, Mirrored};
use oci::{Digest, ErrorCode};

use crate::error::ApiError;
use crate::route::Target;
use crate::{App, Params, blobs, manifests};

/// A request for a mirrored repository: the mirror and the repository as it sees it.
pub(crate) type Found<'a> = (&'a Mirror, Mirrored);

/// The request's target as the cache names it, and what mirrors it, if the registry mirrors
/// upstreams and this is one of theirs.
pub(crate) fn resolve<'a>(
    app: &'a App,
    target: Target,
    ns: Option<&str>,
) -> Result<(Target, Option<Found<'a>>), ApiError> {
    let Some(mirror) = app.mirror.as_deref() else {
        return Ok((target, None));
    };
    match mirror.resolve(ns, target.name()) {
        Ok(Some(m)) => {
            let cache = m.cache.clone();
            Ok((target.with_name(cache), Some((mirror, m))))
        }
        Ok(None) => Ok((target, None)),
        Err(e) => Err(api_error(e, ErrorCode::NameUnknown)),
    }
}

pub(crate) async fn handle(
    app: &App,
    mirror: &Mirror,
    m: &Mirrored,
    req: &Parts,
    target: Target,
    params: &Params,
) -> Result<Response, ApiError> {
    let method = &req.method;
    let head = method == Method::HEAD;
    match (method.clone(), target) {
        (Method::GET | Method::HEAD, Target::Manifest(_, r)) => manifest(mirror, m, &r, head).await,
        (Method::GET | Method::HEAD, Target::Blob(_, d)) => {
            let digest = crate::uploads::parse_digest(&d)?;
            blob(app, mirror, m, &digest, req, head).await
        }
        (Method::GET, target @ (Target::Tags(_) | Target::Referrers(..))) => {
            crate::handle(app, req, target, params, Body::empty()).await
        }
        (_, target) => Err(ApiError::new(
            ErrorCode::Denied,
            format!(
                "{} mirrors upstream {}: it is read-only",
                target.name(),
                m.host()
            ),
        )),
    }
}

async fn manifest(
    mirror: &Mirror,
    m: &Mirrored,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let reference = manifests::parse_get_reference(reference)?;
    let content = mirror
        .manifest(m, &reference)
        .await
        .map_err(|e| api_error(e, ErrorCode::ManifestUnknown))?;
    Ok(manifests::respond(content, head))
}

async fn blob(
    app: &App,
    mirror: &Mirror,
    m: &Mirrored,
    digest: &Digest,
    req: &Parts,
    head: bool,
) -> Result<Response, ApiError> {
    let unknown = |e| api_error(e, ErrorCode::BlobUnknown);
    if head {
        let size = mirror.blob_size(m, digest).await.map_err(unknown)?;
        return Ok(blobs::respond(digest, size, None, Body::empty(), true));
    }
    match mirror.blob(m, digest).await.map_err(unknown)? {
        BlobSource::Stored { size } => blobs::serve(app, digest, size, req, false).await,
        BlobSource::Fetching(fetch) => Ok(streamed(&fetch, digest, &req.headers)?),
    }
}

/// A blob being fetched, as it arrives.
fn streamed(fetch: &Fetch, digest: &Digest, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some(size) = fetch.size() else {
        // No length from upstream: the whole blob, chunked; the answer ends only once verified.
        let mut response = blobs::respond(
            digest,
            0,
            None,
            Body::from_stream(fetch.stream(None)),
            false,
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        return Ok(response);
    };
    let range = blobs::requested_range(headers, size)?;
    let body = Body::from_stream(fetch.stream(range.clone()));
    Ok(blobs::respond(digest, size, range, body, false))
}

/// A mirror's failure as the client sees it; `unknown` is the code for "not found upstream".
fn api_error(e: MirrorError, unknown: ErrorCode) -> ApiError {
    let message = e.to_string();
    match e {
        MirrorError::UnknownUpstream(_) => ApiError::new(ErrorCode::NameUnknown, message),
        MirrorError::NotFound(_) => ApiError::new(unknown, message),
        MirrorError::Denied { .. } => ApiError::new(ErrorCode::Denied, message),
        MirrorError::Unavailable { .. } | MirrorError::Invalid { .. } => {
            ApiError::new(ErrorCode::BadGateway, message)
        }
        MirrorError::Name(_) => ApiError::new(ErrorCode::NameInvalid, message),
        MirrorError::Busy(_) => ApiError::new(ErrorCode::TooManyRequests, message)
            .with_header(axum::http::header::RETRY_AFTER, 1),
        MirrorError::Store(e) => match std::sync::Arc::try_unwrap(e) {
            Ok(e) => ApiError::from(e),
            Err(e) => ApiError::internal(ErrorCode::Unavailable, &e.to_string()),
        },
        MirrorError::Spool(detail) => ApiError::internal(ErrorCode::Unknown, &detail),
    }
}
