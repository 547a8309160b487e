//! Answering a `WWW-Authenticate` challenge: `Basic` takes the credentials as they are; `Bearer`
//! sends them to the token service the challenge names, for a token covering the scopes.

use base64::Engine as _;

use crate::Credentials;

pub enum AuthError {
    /// The registry or its token service refused, or credentials are needed and there are none.
    Refused,
    Unreachable(reqwest::Error),
}

pub async fn answer(
    http: &reqwest::Client,
    challenge: &str,
    scopes: &[String],
    credentials: Option<&Credentials>,
) -> Result<String, AuthError> {
    let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let basic = credentials.map(|c| {
        let raw = format!("{}:{}", c.username, c.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    });
    if scheme.eq_ignore_ascii_case("basic") {
        return basic.ok_or(AuthError::Refused);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Refused);
    }
    let params = parse_params(params);
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let realm = param("realm").ok_or(AuthError::Refused)?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(service) = param("service") {
        query.push(("service", service));
    }
    for scope in scopes {
        query.push(("scope", scope));
    }
    let mut request = http.get(realm).query(&query);
    if let Some(basic) = &basic {
        request = request.header(reqwest::header::AUTHORIZATION, basic);
    }
    let resp = request.send().await.map_err(AuthError::Unreachable)?;
    if !resp.status().is_success() {
        return Err(AuthError::Refused);
    }
    let body: serde_json::Value = resp.json().await.map_err(AuthError::Unreachable)?;
    let token = body["token"]
        .as_str()
        .or_else(|| body["access_token"].as_str())
        .ok_or(AuthError::Refused)?;
    Ok(format!("Bearer {token}"))
}

/// `realm="https://auth.docker.io/token",service="registry.docker.io",scope="a,b"`: values may
/// be quoted and hold commas.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, n)) => (v.to_owned(), n),
                None => (quoted.to_owned(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.trim().to_owned(), n),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters() {
        let p = parse_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            [
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:a/b:pull,push".into())
            ]
        );
        assert_eq!(
            parse_params("realm=x, service=y"),
            [("realm".into(), "x".into()), ("service".into(), "y".into())]
        );
    }
}
