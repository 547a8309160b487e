//! What an operator sees when a setting is wrong: every refusal exits 64 and names the flag, the
//! env var the value came from, the file and the fix; several missing settings are reported at
//! once; host names are accepted where an address is asked for; a proxy waiting for its
//! registry keeps saying what it tried.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::process::Quayside;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn quayside(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("QUAYSIDE_LISTEN")
        .env_remove("DEIS_REGISTRY_LOCATION")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Exit 64 and the message (stderr).
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = quayside(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    stderr
}

#[test]
fn a_rejected_value_names_its_flag_its_env_var_and_what_the_values_mean() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let from_env = refused(
        &["registry", "--data-dir", dir],
        &[("QUAYSIDE_AUTH", "basic")],
    );
    assert!(
        from_env.contains(r#"invalid value "basic" for --auth (from QUAYSIDE_AUTH)"#),
        "{from_env}"
    );
    let listen = refused(
        &["registry", "--data-dir", dir],
        &[("QUAYSIDE_LISTEN", "foo")],
    );
    assert!(
        listen.contains(r#"--listen / QUAYSIDE_LISTEN "foo""#),
        "{listen}"
    );
    let from_gc = refused(&["gc", "--data-dir", dir, "--gc-grace", "soon"], &[]);
    assert!(
        from_gc.contains(r#"invalid value "soon" for --gc-grace"#),
        "{from_gc}"
    );
    let from_flag = refused(&["registry", "--auth", "basic"], &[]);
    assert!(
        from_flag.contains(r#"invalid value "basic" for --auth"#),
        "{from_flag}"
    );
    assert!(!from_flag.contains("(from"), "{from_flag}");
    assert!(
        from_flag.contains("htpasswd (Basic credentials from --htpasswd)"),
        "{from_flag}"
    );
    assert!(
        from_flag.contains("token (Docker token authentication"),
        "{from_flag}"
    );
    // The proxy's --listen is BIND_ADDR, not the registry's variable.
    let proxy = refused(
        &[
            "proxy",
            "--registry-host",
            "127.0.0.1",
            "--registry-port",
            "x",
        ],
        &[],
    );
    assert!(proxy.contains("--registry-port"), "{proxy}");
    // Usage errors stay clap's (exit 2).
    assert_eq!(
        quayside(&["registry", "--no-such-flag"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn listen_accepts_a_host_name_and_says_what_an_address_is() {
    let data = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--log-format",
        "json",
        "registry",
        "--listen",
        "localhost:0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([data.path().display().to_string()])
    .collect();
    let registry = Quayside::spawn(BIN, &args, "registry serving");
    assert_eq!(registry.addr.ip().to_string(), "127.0.0.1");
    let (status, _) = testkit::http_get(registry.addr, "/v2/");
    assert_eq!(status, 200);
    // Durations are logged in whole microseconds, without float noise. The line is written
    // when the response ends, which may be just after the client has it.
    let request_line = || {
        registry
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "request")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while request_line().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ms = request_line().expect("a request log line")["ms"].to_string();
    assert!(ms.split('.').nth(1).is_none_or(|d| d.len() <= 3), "ms={ms}");
    let bad = refused(
        &[
            "registry",
            "--listen",
            "no-such-host.invalid:5000",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        bad.contains("--listen / QUAYSIDE_LISTEN \"no-such-host.invalid:5000\""),
        "{bad}"
    );
    assert!(
        bad.contains("use host:port (127.0.0.1:5000, localhost:5000) or a port"),
        "{bad}"
    );
}

#[test]
fn every_missing_auth_setting_is_reported_at_once_with_its_fix() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let token = refused(&["registry", "--data-dir", dir, "--auth", "token"], &[]);
    assert!(token.contains("--auth token needs --htpasswd / QUAYSIDE_AUTH_HTPASSWD: create it with htpasswd -Bc FILE USER"), "{token}");
    assert!(
        token.contains(
            "--auth token needs --auth-token-secret-file / QUAYSIDE_AUTH_TOKEN_SECRET_FILE"
        ),
        "{token}"
    );
    assert!(token.contains("head -c 32 /dev/urandom"), "{token}");
    let missing = refused(
        &[
            "registry",
            "--data-dir",
            dir,
            "--auth",
            "htpasswd",
            "--htpasswd",
            "/nonexistent/htpasswd",
            "--auth-policy",
            "/nonexistent/policy.yaml",
        ],
        &[],
    );
    assert!(
        missing.contains(
            "--htpasswd / QUAYSIDE_AUTH_HTPASSWD /nonexistent/htpasswd: No such file or directory"
        ),
        "{missing}"
    );
    assert!(
        missing.contains("create it with htpasswd -Bc FILE USER"),
        "{missing}"
    );
    assert!(
        missing.contains("--auth-policy / QUAYSIDE_AUTH_POLICY /nonexistent/policy.yaml"),
        "{missing}"
    );
}

#[test]
fn the_location_is_named_as_it_was_given() {
    let args = ["image", "name", "--app", "web", "--sha", "c0ffee00"];
    let mut flag = vec!["image", "--location", "azure"];
    flag.extend(&args[1..]);
    let by_flag = refused(&flag, &[]);
    assert!(
        by_flag.contains(r#"--location="azure": use on-cluster, off-cluster, ecr or gcr"#),
        "{by_flag}"
    );
    let by_env = refused(&args, &[("DEIS_REGISTRY_LOCATION", "azure")]);
    assert!(
        by_env.contains(r#"DEIS_REGISTRY_LOCATION="azure": use on-cluster"#),
        "{by_env}"
    );
}

#[test]
fn gc_and_fsck_refuse_storage_that_holds_no_registry() {
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    for tool in ["gc", "fsck"] {
        let missing = refused(&[tool, "--data-dir", "/nonexistent/dir"], &[]);
        assert!(
            missing.contains("--data-dir / QUAYSIDE_DATA_DIR /nonexistent/dir does not exist"),
            "{missing}"
        );
        let nothing = refused(&[tool, "--data-dir", empty], &[]);
        assert!(nothing.contains("holds no repositories"), "{nothing}");
        assert!(nothing.contains("--allow-empty"), "{nothing}");
        let allowed = quayside(&[tool, "--data-dir", empty, "--allow-empty"], &[]);
        assert!(
            allowed.status.success(),
            "{}",
            String::from_utf8_lossy(&allowed.stderr)
        );
    }
    assert!(!std::path::Path::new("/nonexistent/dir").exists());
}

#[test]
fn a_proxy_waiting_for_its_registry_keeps_saying_what_it_tried() {
    let nothing_there = testkit::tools::free_loopback_addr();
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--registry-host",
            "127.0.0.1",
            "--registry-port",
        ])
        .arg(nothing_there.port().to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut waiting = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["message"] == "waiting for the registry to come online..." {
            waiting.push(v);
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    // After 0, 1 and 3 s of one attempt a second: growing gaps, each line with the URL, the
    // attempts so far and the error.
    let attempts: Vec<u64> = waiting
        .iter()
        .map(|v| v["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 4], "{waiting:?}");
    for v in &waiting {
        assert_eq!(v["url"], format!("http://{nothing_there}/v2/"));
        assert!(
            v["error"].as_str().unwrap().contains("Connection refused"),
            "{v}"
        );
    }
}
