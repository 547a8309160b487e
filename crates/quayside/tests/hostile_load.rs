#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
//! Misbehaving clients in small numbers against a registry whose limits are set small to match:
//! silent connections, downloads that are never read, uploads that trickle. A well-behaved
//! client must still be answered within a bound, and the silent connections must be closed by
//! the timeouts. `bench/hostile.sh` runs the full-size scenarios.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::process::Quayside;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

/// How long a well-behaved request may take here (a debug build on a loaded 2-core machine).
const BOUND: Duration = Duration::from_secs(3);

/// Status of one request on a fresh connection, and how long it took.
fn timed(addr: SocketAddr, request: &str) -> (u16, Duration) {
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    let status = match conn.read_exact(&mut head) {
        Ok(()) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    };
    (status, started.elapsed())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
}

/// Whether the server closed (or refused) the connection within `within`.
fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            // A 503 for a connection over the limit, then the close.
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    let digest = testkit::sha256(data);
    let mut conn = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(data).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    digest
}

/// 48 connections that never send a byte, against `--max-connections 32 --idle-timeout 1s`:
/// those over the limit are answered 503 at once, the rest closed after a second, and a
/// well-behaved client is served as soon as slots free up.
#[test]
fn silent_connections_are_closed_and_others_still_served() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(
        BIN,
        data.path(),
        &["--idle-timeout", "1s", "--max-connections", "32"],
    );
    let mut silent: Vec<TcpStream> = (0..48)
        .map(|_| TcpStream::connect(reg.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let served = loop {
        let (status, _) = timed(reg.addr, &get("/v2/"));
        if status == 200 {
            break started.elapsed();
        }
        assert!(status == 503 || status == 0, "{status}");
        assert!(started.elapsed() < Duration::from_secs(5), "never served");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served < BOUND, "served after {served:?}");
    let open = silent
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_secs(3)))
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "silent connections still open");
}

/// Downloads that are never read and uploads that trickle one byte at a time, more of each than
/// the registry has I/O threads (`--io-threads 4`): manifest GETs and blob HEADs of others are
/// still answered within the bound.
#[test]
fn stalled_downloads_and_trickling_uploads_do_not_starve_others() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(BIN, data.path(), &["--io-threads", "4"]);
    let blob = testkit::random_bytes(16 << 20, 1);
    let digest = push_blob(reg.addr, "big", &blob);
    let config = push_blob(reg.addr, "big", b"{}");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{digest}","size":{}}}]}}"#,
        blob.len()
    );
    let put = format!(
        "PUT /v2/big/manifests/v1 HTTP/1.1\r\nHost: r\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{manifest}",
        manifest.len()
    );
    assert_eq!(timed(reg.addr, &put).0, 201);

    let stalled: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut c = TcpStream::connect(reg.addr).unwrap();
            c.write_all(get(&format!("/v2/big/blobs/{digest}")).as_bytes())
                .unwrap();
            c
        })
        .collect();
    let mut trickling: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut c = TcpStream::connect(reg.addr).unwrap();
            c.write_all(
                b"POST /v2/slow/blobs/uploads/ HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
            let mut buf = [0u8; 2048];
            let n = c.read(&mut buf).expect("upload started within the bound");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let location = text
                .lines()
                .find_map(|l| l.strip_prefix("location: "))
                .unwrap()
                .trim()
                .to_owned();
            c.write_all(
                format!("PATCH {location} HTTP/1.1\r\nHost: r\r\nContent-Length: 1000000\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for round in 0..10 {
        for c in &mut trickling {
            let _ = c.write_all(b"x");
        }
        for path in [
            "/v2/big/manifests/v1".to_owned(),
            format!("/v2/big/blobs/{config}"),
        ] {
            let (status, took) = timed(reg.addr, &get(&path));
            assert_eq!(status, 200, "round {round}: {path}");
            worst = worst.max(took);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(worst < BOUND, "slowest well-behaved request took {worst:?}");
    eprintln!(
        "{} stalled downloads, {} trickling uploads, 4 I/O threads: slowest manifest GET or blob GET {worst:?}",
        stalled.len(),
        trickling.len()
    );
}

/// `--rate-limit 5 --rate-limit-burst 5`: a client that floods gets 429 `TOOMANYREQUESTS` with
/// `Retry-After` past its burst, probes are never limited, and the client is served again once
/// it waited.
#[test]
fn a_flooding_client_is_rate_limited_and_probes_are_not() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(
        BIN,
        data.path(),
        &["--rate-limit", "5", "--rate-limit-burst", "5"],
    );
    let statuses: Vec<u16> = (0..20).map(|_| timed(reg.addr, &get("/v2/")).0).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert_eq!(ok + limited, 20, "{statuses:?}");
    let mut conn = TcpStream::connect(reg.addr).unwrap();
    conn.write_all(get("/v2/").as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("TOOMANYREQUESTS"), "{answer}");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(timed(reg.addr, &get(probe)).0, 200, "{probe}");
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(timed(reg.addr, &get("/v2/")).0, 200);
}

/// The node proxy runs the same accept loop: silent connections to it are closed after its
/// `--idle-timeout`, and requests through it are still served.
#[test]
fn the_proxy_closes_silent_connections_too() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(BIN, data.path(), &[]);
    let proxy = Quayside::proxy(BIN, reg.addr, &["--idle-timeout", "1s"]);
    let mut silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    let (status, took) = timed(proxy.addr, &get("/v2/"));
    assert_eq!(status, 200);
    assert!(took < BOUND, "{took:?}");
    let open = silent
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_secs(3)))
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "silent connections to the proxy still open");
}

/// An HTTP/2 (h2c) client that sends the connection preface and its settings, then nothing:
/// hyper has no idle timeout of its own for HTTP/2, the inactivity deadline closes it.
#[test]
fn a_silent_http2_connection_is_closed() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(
        BIN,
        data.path(),
        &["--idle-timeout", "1s", "--keepalive-timeout", "2s"],
    );
    let mut conn = TcpStream::connect(reg.addr).unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut conn, Duration::from_secs(8)),
        "HTTP/2 connection still open"
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "closed too early: {after:?}"
    );
}
