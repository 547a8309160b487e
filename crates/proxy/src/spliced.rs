//! Blob downloads relayed socket to socket with `splice(2)` (see `serve::ZeroCopy`): the proxy
//! sends the request on a connection of its own, reads only the registry's response head, and
//! answers with that head and a body the kernel moves from the registry's socket to the
//! client's. A blob pull through the node proxy then costs it no buffer and no copy through
//! user space, where the pooled client reads every byte in and writes it out again.
//!
//! Only a response framed by `Content-Length` is relayed so; any other framing (chunked, or
//! none) gives `None`, and the caller asks again through the pooled client. The connection is
//! used once (`Connection: close`): a blob is large next to a connect on the cluster network.

use std::io;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A registry response head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// The connection's zero-copy handle when this request's response can be spliced: a blob GET
/// without a body from an HTTP/1 client of `serve`.
pub(crate) fn spliceable<'a>(parts: &'a Parts, body: &Body) -> Option<&'a serve::ZeroCopy> {
    let path = parts.uri.path();
    let blob = path.contains("/blobs/") && !path.contains("/blobs/uploads");
    let bodiless = http_body::Body::is_end_stream(body);
    if parts.method != Method::GET || !blob || !bodiless {
        return None;
    }
    parts
        .extensions
        .get::<serve::ZeroCopy>()
        .filter(|z| z.available())
}

/// Sends the request (already rewritten for the registry) to `upstream` and answers with the
/// registry's response, its body spliced; `None` when that response is not framed by length.
pub(crate) async fn get(
    upstream: &str,
    parts: &Parts,
    zero_copy: &serve::ZeroCopy,
) -> io::Result<Option<Response>> {
    let mut socket = TcpStream::connect(upstream).await?;
    socket.set_nodelay(true)?;
    socket.write_all(&request_head(parts, upstream)).await?;
    let (status, mut headers, first) = read_head(&mut socket).await?;
    let Some(length) = body_length(status, &headers) else {
        return Ok(None);
    };
    crate::strip_hop_by_hop(&mut headers);
    let body = zero_copy.relay(socket, first, length)?;
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Some(response))
}

/// `GET <path> HTTP/1.1` with the request's headers (the client's `Host` kept, as the pooled
/// client keeps it) and `Connection: close`.
fn request_head(parts: &Parts, upstream: &str) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    if !parts.headers.contains_key(header::HOST) {
        head.extend_from_slice(format!("host: {upstream}\r\n").as_bytes());
    }
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Reads the response head; also returns the body bytes that came with it.
async fn read_head(socket: &mut TcpStream) -> io::Result<(StatusCode, HeaderMap, Bytes)> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        if socket.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the registry closed the connection before its response head",
            ));
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        let parsed = response.parse(&buf).map_err(invalid)?;
        if let httparse::Status::Complete(len) = parsed {
            let status = StatusCode::from_u16(response.code.unwrap_or(0)).map_err(invalid)?;
            let mut headers = HeaderMap::with_capacity(response.headers.len());
            for field in response.headers.iter() {
                let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(invalid)?;
                let value = HeaderValue::from_bytes(field.value).map_err(invalid)?;
                headers.append(name, value);
            }
            return Ok((status, headers, buf.split_off(len).freeze()));
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("response head over 64 KiB"));
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad response head from the registry: {e}"),
    )
}

/// The body's length when the response is framed by `Content-Length` alone.
fn body_length(status: StatusCode, headers: &HeaderMap) -> Option<u64> {
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if no_body || headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next()?.to_str().ok()?.trim().parse().ok()?;
    lengths.next().is_none().then_some(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_content_length_frames_a_spliced_body() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(body_length(StatusCode::OK, &h), Some(42));
        assert_eq!(body_length(StatusCode::NOT_MODIFIED, &h), None);
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(body_length(StatusCode::OK, &h), None);
        let mut chunked = HeaderMap::new();
        chunked.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(body_length(StatusCode::OK, &chunked), None);
        assert_eq!(body_length(StatusCode::OK, &HeaderMap::new()), None);
    }
}
