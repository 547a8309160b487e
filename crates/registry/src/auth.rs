//! Access control at the front of every API request: the action a request needs on its
//! repository, checked before anything is looked up (so a refusal says nothing about whether
//! the repository exists); the token endpoint of token mode.

use access::{Action, Denial};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use oci::ErrorCode;

use crate::error::ApiError;
use crate::route::Target;
use crate::{App, Params};

/// The action `method` on `target` needs.
pub fn action(method: &Method, target: &Target) -> Action {
    match (method, target) {
        (&Method::DELETE, Target::Manifest(..) | Target::Blob(..)) => Action::Delete,
        (_, Target::Uploads(..) | Target::Upload(..)) => Action::Push,
        (&Method::GET | &Method::HEAD, _) => Action::Pull,
        _ => Action::Push,
    }
}

/// Refuses, or lets the request on (always, without access control); a mount from a repository
/// the caller may not read is turned into a plain upload (as distribution does) rather than
/// refused.
pub fn check(
    app: &App,
    headers: &HeaderMap,
    method: &Method,
    target: &Target,
    params: &mut Params,
) -> Result<(), ApiError> {
    let Some(access) = app.access.as_deref() else {
        return Ok(());
    };
    let authorization = authorization(headers);
    let realm = realm(app, headers);
    access
        .check(
            authorization,
            target.name().as_str(),
            action(method, target),
            &realm,
        )
        .map_err(denied)?;
    if let Some(from) = &params.from
        && access
            .check(authorization, from, Action::Pull, &realm)
            .is_err()
    {
        params.mount = None;
        params.from = None;
    }
    Ok(())
}

pub fn check_base(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match app.access.as_deref() {
        Some(access) => access
            .check_base(authorization(headers), &realm(app, headers))
            .map_err(denied),
        None => Ok(()),
    }
}

/// Whether the catalog shows `repository` to this caller.
pub fn can_list(app: &App, headers: &HeaderMap, repository: &str) -> bool {
    app.access
        .as_deref()
        .is_none_or(|a| a.can_list(authorization(headers), repository))
}

/// `GET /auth/token?service=…&scope=…`: a token for what the caller may do of what it asks.
pub async fn token(State(app): State<App>, req: Request) -> Response {
    let Some(access) = app.access.as_deref().filter(|a| a.issues_tokens()) else {
        return ApiError::new(ErrorCode::NameUnknown, "no such endpoint").into_response();
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let service = pairs
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.as_str());
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned))
        .collect();
    let realm = realm(&app, req.headers());
    match access.issue(authorization(req.headers()), service, &scopes, &realm) {
        Ok(token) => axum::Json(token).into_response(),
        Err(d) => denied(d).into_response(),
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The token endpoint's URL as clients reach this registry (or as configured). `Host` and
/// `X-Forwarded-Proto` come from the client, so they are used only when they are a plain host
/// name or address and `http`/`https`: they end up inside the `WWW-Authenticate` header.
fn realm(app: &App, headers: &HeaderMap) -> String {
    if let Some(realm) = &app.auth_realm {
        return realm.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| is_plain_host(h))
        .unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").map(|v| v.as_bytes()) {
        Some(b"https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/auth/token")
}

/// `name`, `name:port`, `1.2.3.4:5000` or `[::1]:5000`: nothing that could end a quoted string.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

fn denied(denial: Denial) -> ApiError {
    match denial {
        Denial::Unauthenticated { challenge } => {
            ApiError::new(ErrorCode::Unauthorized, "authentication required")
                .with_header(header::WWW_AUTHENTICATE, challenge)
        }
        Denial::Forbidden => ApiError::new(
            ErrorCode::Denied,
            "requested access to the resource is denied",
        ),
    }
}
