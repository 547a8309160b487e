//! Sorted, paginated listings: `GET /v2/<name>/tags/list`, `GET /v2/_catalog`, and
//! `GET /v2/<name>/referrers/<digest>`.

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use oci::{ErrorCode, RepoName, media};
use serde_json::json;
use storage::Page;

use crate::error::ApiError;
use crate::uploads::parse_digest;
use crate::{App, Params, response};

pub async fn tags(app: &App, name: &RepoName, params: &Params) -> Result<Response, ApiError> {
    let n = page_size(params)?;
    let page = app.store.tag_page(name, n, params.last.as_deref()).await?;
    let link = next_link(&format!("/v2/{name}/tags/list"), n, &page);
    Ok(with_link(
        Json(json!({"name": name.as_str(), "tags": page.items})),
        link,
    ))
}

/// A page of the names `visible` allows: hidden names are left out before paging, so `n` counts
/// only visible ones and the Link never names a hidden one.
pub async fn catalog(
    app: &App,
    params: &Params,
    visible: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Response, ApiError> {
    let n = page_size(params)?;
    let last = params.last.as_deref();
    let page = app.store.catalog_page(n, last, visible).await?;
    let link = next_link("/v2/_catalog", n, &page);
    Ok(with_link(Json(json!({"repositories": page.items})), link))
}

pub async fn referrers(
    app: &App,
    name: &RepoName,
    digest: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let subject = parse_digest(digest)?;
    let filter = params.artifact_type.as_deref();
    let manifests = app.store.referrers(name, &subject, filter).await?;
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        response::header_value(media::OCI_INDEX),
    );
    if filter.is_some() {
        headers.insert(
            response::FILTERS_HEADER,
            response::header_value("artifactType"),
        );
    }
    Ok(response)
}

fn page_size(params: &Params) -> Result<Option<usize>, ApiError> {
    params
        .n
        .as_deref()
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                ApiError::new(
                    ErrorCode::PaginationNumberInvalid,
                    format!("n={n:.20?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

/// `Link: <path?n=N&last=X>; rel="next"` when more entries follow.
fn next_link(path: &str, n: Option<usize>, page: &Page) -> Option<String> {
    let (Some(n), Some(last), true) = (n, page.items.last(), page.more) else {
        return None;
    };
    Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}

fn with_link(body: impl IntoResponse, link: Option<String>) -> Response {
    let mut response = body.into_response();
    if let Some(link) = link {
        response
            .headers_mut()
            .insert(header::LINK, response::header_value(link));
    }
    response
}
