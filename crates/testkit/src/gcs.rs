//! A fake of the subset of Google Cloud Storage's XML API that `object_store` uses (no GCS
//! emulator that speaks it can run here): objects (PUT, GET with Range, HEAD, DELETE, copy via
//! `x-goog-copy-source`), ListObjectsV2-style listing with prefix, delimiter, start-after and pages, and multipart
//! uploads (initiate, parts, complete, abort), and generation preconditions on PUT
//! (`x-goog-if-generation-match`, 412 when they fail) for conditional writes. In memory, over real HTTP on loopback, answering
//! with GCS's status codes (404 for a missing object or upload). The client reaches it through a
//! service-account key with `gcs_base_url` and `disable_oauth`, the fields object_store reads for
//! local emulators.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Bucket {
    /// Created through the JSON API (data requests work on any bucket name).
    created: bool,
    objects: HashMap<String, Object>,
    uploads: HashMap<String, BTreeMap<u32, Bytes>>,
    next_id: u64,
    /// Generations are unique per bucket here (GCS: per object, increasing).
    next_generation: u64,
}

#[derive(Clone)]
struct Object {
    data: Bytes,
    etag: String,
    modified: std::time::SystemTime,
    generation: u64,
}

impl Object {
    fn new(data: Bytes) -> Object {
        let etag = format!("\"{}\"", &crate::sha256(&data)[7..39]);
        Object {
            data,
            etag,
            modified: std::time::SystemTime::now(),
            generation: 0,
        }
    }
}

impl Bucket {
    /// Stores `object` under `key` with a new generation, which it returns.
    fn insert(&mut self, key: &str, mut object: Object) -> u64 {
        self.next_generation += 1;
        object.generation = self.next_generation;
        self.objects.insert(key.to_owned(), object);
        self.next_generation
    }

    /// `x-goog-if-generation-match`: 0 means "only if absent"; GCS answers 412 otherwise.
    fn precondition_holds(&self, key: &str, headers: &HeaderMap) -> bool {
        let Some(wanted) = headers
            .get("x-goog-if-generation-match")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        else {
            return true;
        };
        self.objects.get(key).map_or(0, |o| o.generation) == wanted
    }
}

fn stored(etag: String, generation: u64) -> Response {
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("x-goog-generation"),
                generation.to_string(),
            ),
        ],
    )
        .into_response()
}

type Shared = Arc<Mutex<HashMap<String, Bucket>>>;

/// A running fake; buckets are created on first use.
pub struct FakeGcs {
    pub addr: SocketAddr,
}

impl FakeGcs {
    pub async fn start() -> FakeGcs {
        let state: Shared = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGcs { addr }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service-account key file pointing object_store at this fake.
    pub fn key_json(&self) -> String {
        serde_json::json!({
            "private_key": "unused",
            "private_key_id": "unused",
            "client_email": "registry@quayside.test",
            "project_id": "quayside-test",
            "gcs_base_url": self.base_url(),
            "disable_oauth": true,
        })
        .to_string()
    }
}

fn not_found(what: &str) -> Response {
    let body = format!("<?xml version='1.0' encoding='UTF-8'?><Error><Code>{what}</Code></Error>");
    (StatusCode::NOT_FOUND, body).into_response()
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_encoding::percent_decode_str(uri.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    let mut all = state.lock().expect("fake gcs lock");
    if path == "storage/v1/b" && method == Method::POST {
        return create_bucket(&mut all, &body);
    }
    let (bucket, key) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let b = all.entry(bucket.to_owned()).or_default();
    match (method, key.is_empty()) {
        (Method::GET, true) => list(b, &query),
        (Method::POST, false) if query.contains_key("uploads") => {
            b.next_id += 1;
            let id = format!("upload-{}", b.next_id);
            b.uploads.insert(id.clone(), BTreeMap::new());
            xml(format!(
                "<InitiateMultipartUploadResult><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
            ))
        }
        (Method::POST, false) => match query.get("uploadId") {
            Some(id) => complete(b, key, id, &body),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        (Method::PUT, false) => put(b, key, &query, &headers, body),
        (Method::GET | Method::HEAD, false) => match b.objects.get(key) {
            Some(o) => get(o, &headers),
            None => not_found("NoSuchKey"),
        },
        (Method::DELETE, false) => match query.get("uploadId") {
            Some(id) => match b.uploads.remove(id) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => not_found("NoSuchUpload"),
            },
            None => match b.objects.remove(key) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => not_found("NoSuchKey"),
            },
        },
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// JSON API bucket insert: 409 "You already own this bucket" the second time, as GCS answers.
fn create_bucket(all: &mut HashMap<String, Bucket>, body: &[u8]) -> Response {
    let name = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_owned));
    let Some(name) = name else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let bucket = all.entry(name.clone()).or_default();
    if bucket.created {
        let error = r#"{"error":{"code":409,"message":"Your previous request to create the named bucket succeeded and you already own it."}}"#;
        return (StatusCode::CONFLICT, error).into_response();
    }
    bucket.created = true;
    axum::Json(serde_json::json!({"kind": "storage#bucket", "name": name})).into_response()
}

fn put(
    b: &mut Bucket,
    key: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let (Some(id), Some(n)) = (query.get("uploadId"), query.get("partNumber")) {
        let Some(parts) = b.uploads.get_mut(id) else {
            return not_found("NoSuchUpload");
        };
        let etag = Object::new(body.clone()).etag;
        parts.insert(n.parse().unwrap_or(0), body);
        return (StatusCode::OK, [(header::ETAG, etag)]).into_response();
    }
    if !b.precondition_holds(key, headers) {
        let body =
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code></Error>";
        return (StatusCode::PRECONDITION_FAILED, body).into_response();
    }
    let object = match headers.get("x-goog-copy-source") {
        Some(source) => {
            let source = percent_encoding::percent_decode_str(source.to_str().unwrap_or(""))
                .decode_utf8_lossy()
                .into_owned();
            let from = source.split_once('/').map_or("", |(_, k)| k);
            match b.objects.get(from) {
                Some(o) => Object::new(o.data.clone()),
                None => return not_found("NoSuchKey"),
            }
        }
        None => Object::new(body),
    };
    let etag = object.etag.clone();
    let generation = b.insert(key, object);
    stored(etag, generation)
}

fn complete(b: &mut Bucket, key: &str, id: &str, body: &[u8]) -> Response {
    let Some(parts) = b.uploads.remove(id) else {
        return not_found("NoSuchUpload");
    };
    // Parts are assembled in the order the completion names them.
    let text = String::from_utf8_lossy(body);
    let mut data = Vec::new();
    for chunk in text.split("<PartNumber>").skip(1) {
        let n: u32 = chunk
            .split('<')
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(0);
        match parts.get(&n) {
            Some(part) => data.extend_from_slice(part),
            None => return (StatusCode::BAD_REQUEST, "InvalidPart").into_response(),
        }
    }
    let object = Object::new(data.into());
    let etag = object.etag.clone();
    b.insert(key, object);
    xml(format!(
        "<CompleteMultipartUploadResult><ETag>{etag}</ETag></CompleteMultipartUploadResult>"
    ))
}

fn get(o: &Object, headers: &HeaderMap) -> Response {
    let size = o.data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("bytes=")?
                .split_once('-')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        })
        .and_then(|(a, b)| {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() {
                size - 1
            } else {
                b.parse::<u64>().ok()?.min(size - 1)
            };
            Some((start, end))
        });
    let mut response = match range {
        Some((start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))],
            o.data.slice(start as usize..=end as usize),
        )
            .into_response(),
        None => o.data.clone().into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, o.etag.parse().expect("etag header"));
    h.insert("x-goog-generation", o.generation.into());
    h.insert(
        header::LAST_MODIFIED,
        httpdate::fmt_http_date(o.modified)
            .parse()
            .expect("date header"),
    );
    response
}

/// ListObjectsV2: prefix and delimiter, `start-after`, `max-keys` (entries and common
/// prefixes together, in key order) and `continuation-token` (the last key of the page before).
fn list(b: &Bucket, query: &HashMap<String, String>) -> Response {
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let delimiter = query.get("delimiter").map(String::as_str);
    let after = query
        .get("continuation-token")
        .or(query.get("start-after"))
        .map(String::as_str)
        .unwrap_or("");
    let max_keys: usize = query
        .get("max-keys")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000);
    // Key → Some(object) for contents, None for a common prefix.
    let mut entries = BTreeMap::new();
    for (key, o) in &b.objects {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        match delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
            Some(end) => entries.insert(format!("{prefix}{}", &rest[..end]), None),
            None => entries.insert(key.clone(), Some(o)),
        };
    }
    let mut page: Vec<_> = entries
        .into_iter()
        .filter(|(key, _)| key.as_str() > after)
        .collect();
    let truncated = page.len() > max_keys;
    page.truncate(max_keys);
    let mut out = String::from("<ListBucketResult>");
    for (key, entry) in &page {
        match entry {
            Some(o) => out.push_str(&format!(
                "<Contents><Key>{key}</Key><Size>{}</Size><LastModified>{}</LastModified><ETag>{}</ETag></Contents>",
                o.data.len(),
                chrono_like_rfc3339(o.modified),
                o.etag
            )),
            None => out.push_str(&format!(
                "<CommonPrefixes><Prefix>{key}</Prefix></CommonPrefixes>"
            )),
        }
    }
    if truncated && let Some((last, _)) = page.last() {
        out.push_str(&format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{last}</NextContinuationToken>"
        ));
    }
    out.push_str("</ListBucketResult>");
    xml(out)
}

fn chrono_like_rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version='1.0' encoding='UTF-8'?>{body}"),
    )
        .into_response()
}
