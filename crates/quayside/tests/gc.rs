//! Garbage collection as operators run it: `quayside gc` (dry run, then for real) beside a
//! serving registry, and `registry --gc-interval` collecting while skopeo pushes, with every
//! pushed image intact afterwards.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::image::{self, Image};
use testkit::process::Quayside;
use testkit::tools::Skopeo;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn push_orphan(addr: std::net::SocketAddr, seed: u64) -> String {
    let data = testkit::random_bytes(10_000, seed);
    let digest = testkit::sha256(&data);
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            "@-",
        ])
        .arg(format!(
            "http://{addr}/v2/junk/blobs/uploads/?digest={digest}"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(&data)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    digest
}

fn blob_status(addr: std::net::SocketAddr, repo: &str, digest: &str) -> u16 {
    testkit::http(addr, "HEAD", &format!("/v2/{repo}/blobs/{digest}")).0
}

fn gc(data: &std::path::Path, extra: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["gc", "--data-dir"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn gc_command_beside_a_serving_registry() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(BIN, data.path(), &[]);
    let orphan = push_orphan(reg.addr, 1);
    let r = gc(data.path(), &["--dry-run", "--gc-grace", "0s"]);
    assert_eq!(
        (
            r["dry_run"].as_bool(),
            r["blobs_deleted"].as_u64(),
            r["bytes_reclaimed"].as_u64()
        ),
        (Some(true), Some(1), Some(10_000))
    );
    assert_eq!(blob_status(reg.addr, "junk", &orphan), 200);
    let r = gc(data.path(), &["--dry-run=false", "--gc-grace", "1h"]);
    assert_eq!(
        (
            r["dry_run"].as_bool(),
            r["blobs_deleted"].as_u64(),
            r["blobs_young"].as_u64()
        ),
        (Some(false), Some(0), Some(1))
    );
    // An upload abandoned in a repository that has nothing else (a first push cut short).
    let (status, _) = testkit::http(reg.addr, "POST", "/v2/abandoned/blobs/uploads/");
    assert_eq!(status, 202);
    // A session a kill left with its start time but no data yet.
    let killed = data.path().join(
        "docker/registry/v2/repositories/killed/_uploads/0b0e0b0e-0000-4000-8000-000000000000",
    );
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::write(killed.join("startedat"), "2026-01-01T00:00:00Z").unwrap();
    let r = gc(
        data.path(),
        &["--gc-grace", "0s", "--gc-upload-max-age", "0s"],
    );
    assert_eq!(
        (r["blobs_deleted"].as_u64(), r["uploads_purged"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(blob_status(reg.addr, "junk", &orphan), 404);
    assert!(!killed.exists());
}

#[test]
fn scheduled_gc_while_pushing_keeps_every_pushed_image() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(
        BIN,
        data.path(),
        &[
            "--gc-interval",
            "300ms",
            "--gc-grace",
            "4s",
            "--gc-delete-untagged",
            "true",
        ],
    );
    let orphan = push_orphan(reg.addr, 2);
    let started = Instant::now();
    let addr = reg.addr;
    let pushers: Vec<_> = (0..3u64)
        .map(|p| {
            std::thread::spawn(move || {
                let skopeo = Skopeo::new();
                let mut pushed = Vec::new();
                for i in 0..4u64 {
                    let work = tempfile::tempdir().unwrap();
                    let img = Image::new(100 + p * 10 + i, &[150_000, 20_000], "amd64");
                    image::write_layout(work.path(), std::slice::from_ref(&img), None, "v1");
                    let reference = format!("docker://{addr}/app{p}/img{i}:v1");
                    skopeo.copy(&format!("oci:{}:v1", work.path().display()), &reference);
                    pushed.push((format!("app{p}/img{i}"), img));
                }
                pushed
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    // Let collection run past the grace period of everything pushed.
    std::thread::sleep(
        Duration::from_secs(5).saturating_sub(started.elapsed()) + Duration::from_secs(1),
    );
    for (repo, img) in pushers.iter().flatten() {
        let (status, _) = testkit::http(addr, "HEAD", &format!("/v2/{repo}/manifests/v1"));
        assert_eq!(status, 200, "{repo}");
        for blob in img.blobs() {
            assert_eq!(
                blob_status(addr, repo, &blob.digest),
                200,
                "{repo} lost {}",
                blob.digest
            );
        }
    }
    assert_eq!(
        blob_status(addr, "junk", &orphan),
        404,
        "the orphan outlived its grace period"
    );
    let (_, metrics) = testkit::http_get(addr, "/metrics");
    let runs: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quayside_gc_runs_total ")?.parse().ok())
        .unwrap();
    assert!(runs >= 5.0, "{metrics}");
    assert!(
        metrics.contains("quayside_gc_blobs_deleted_total 1"),
        "{metrics}"
    );
}

/// `quayside fsck` finds a blob whose bytes no longer hash to its name (exit 1, named in the
/// report), removes it with `--delete-corrupt`, and leaves intact blobs alone.
#[test]
fn fsck_finds_and_removes_corrupt_blobs() {
    let data = tempfile::tempdir().unwrap();
    let reg = Quayside::registry(BIN, data.path(), &[]);
    let good = push_orphan(reg.addr, 2);
    let bad = push_orphan(reg.addr, 3);
    let hex = bad.trim_start_matches("sha256:");
    let file = data.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    std::fs::write(&file, testkit::random_bytes(10_000, 4)).unwrap();
    let fsck = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["fsck", "--data-dir"])
            .arg(data.path())
            .args(extra)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, report, stderr) = fsck(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["corrupt"], serde_json::json!([bad]));
    assert_eq!(
        (report["blobs"].as_u64(), report["removed"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(stderr.contains("--delete-corrupt"), "{stderr}");
    assert_eq!(
        blob_status(reg.addr, "junk", &bad),
        200,
        "kept without --delete-corrupt"
    );
    let (code, report, stderr) = fsck(&["--delete-corrupt"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["removed"].as_u64(), Some(1));
    assert_eq!(blob_status(reg.addr, "junk", &bad), 404);
    assert_eq!(blob_status(reg.addr, "junk", &good), 200);
    let (code, report, _) = fsck(&[]);
    assert_eq!(
        (code, report["corrupt"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
}
