//! Upload data written with O_DIRECT: whatever the chunking, the blob holds exactly the bytes
//! sent, aligned blocks really go the direct way on a disk filesystem, and a filesystem that
//! refuses it (ramfs) gets the page cache instead of an error.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use oci::{Algorithm, Digest, RepoName};
use storage::{ByteStream, FsBackend, Store};

const MIB: usize = 1 << 20;

/// `bytes` as a request body arriving in pieces of the given sizes, in turn.
fn body(bytes: &[u8], pieces: &[usize]) -> ByteStream {
    let mut chunks = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < bytes.len() {
        let n = pieces[i % pieces.len()].min(bytes.len() - at);
        chunks.push(Ok(bytes::Bytes::copy_from_slice(&bytes[at..at + n])));
        at += n;
        i += 1;
    }
    futures_util::stream::iter(chunks).boxed()
}

/// Pushes `bytes` as one PATCH per entry of `patches` (their lengths), each arriving in
/// `pieces`, then a PUT; returns what the stored blob holds.
async fn push(store: &Store, bytes: &[u8], patches: &[usize], pieces: &[usize]) -> Vec<u8> {
    let name: RepoName = "direct/io".parse().unwrap();
    let digest = Digest::of(Algorithm::Sha256, bytes);
    let id = store.upload_start(&name).await.unwrap();
    let mut at = 0;
    for &len in patches {
        let part = &bytes[at..at + len];
        let end = store
            .upload_append(
                &name,
                id,
                Some(at as u64),
                Some(len as u64),
                body(part, pieces),
            )
            .await
            .unwrap();
        at += len;
        assert_eq!(end, at as u64);
    }
    let rest = body(&bytes[at..], pieces);
    let size = store
        .upload_finish(&name, id, Some(at as u64), &digest, rest)
        .await
        .unwrap();
    assert_eq!(size, bytes.len() as u64);
    let mut stored = Vec::new();
    let mut stream = store.blob_get(&digest, None).await.unwrap();
    while let Some(chunk) = stream.next().await {
        stored.extend_from_slice(&chunk.unwrap());
    }
    stored
}

fn store_on(dir: &Path) -> (Store, FsBackend) {
    let backend = FsBackend::new(dir, true);
    (Store::new(Arc::new(backend.clone()), 1 << 20), backend)
}

/// A directory on the disk filesystem the build is on (tests' `/tmp` may be tmpfs).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[tokio::test]
async fn a_monolithic_push_goes_direct_but_for_its_unaligned_tail() {
    let dir = disk_dir();
    let (store, backend) = store_on(dir.path());
    let bytes = testkit::random_bytes(5 * MIB + 4096 + 123, 1);
    // Pieces of odd sizes, as a socket delivers them: blocks are cut regardless.
    let stored = push(&store, &bytes, &[], &[65_537, 300_000, 1, 16_384]).await;
    assert!(stored == bytes, "the blob differs from what was pushed");
    assert_eq!(
        backend.direct_bytes(),
        (5 * MIB + 4096) as u64,
        "every whole 4 KiB of the blob should have been written with O_DIRECT on {}",
        dir.path().display()
    );
}

#[tokio::test]
async fn chunked_pushes_on_and_off_alignment_hold_their_bytes() {
    let dir = disk_dir();
    let (store, backend) = store_on(dir.path());
    // An aligned PATCH, then one that ends off alignment, after which nothing can go direct.
    let bytes = testkit::random_bytes(11 * MIB + 777, 2);
    let stored = push(
        &store,
        &bytes,
        &[2 * MIB, MIB + 100, 3 * MIB],
        &[8192, 99_999],
    )
    .await;
    assert!(stored == bytes, "the blob differs from what was pushed");
    assert_eq!(backend.direct_bytes(), (3 * MIB) as u64);
}

#[tokio::test]
async fn an_upload_resumed_after_a_failed_append_holds_the_retry_not_the_leftovers() {
    let dir = disk_dir();
    let (store, _) = store_on(dir.path());
    let name: RepoName = "direct/io".parse().unwrap();
    let bytes = testkit::random_bytes(4 * MIB, 3);
    let id = store.upload_start(&name).await.unwrap();
    // The first attempt dies after writing two direct blocks: its bytes were never acknowledged.
    let broken = futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from(testkit::random_bytes(3 * MIB, 99))),
        Err(std::io::Error::other("client went away")),
    ])
    .boxed();
    assert!(
        store
            .upload_append(&name, id, Some(0), None, broken)
            .await
            .is_err()
    );
    let digest = Digest::of(Algorithm::Sha256, &bytes);
    store
        .upload_finish(&name, id, Some(0), &digest, body(&bytes, &[MIB / 3]))
        .await
        .unwrap();
    let mut stored = Vec::new();
    let mut stream = store.blob_get(&digest, None).await.unwrap();
    while let Some(chunk) = stream.next().await {
        stored.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        stored == bytes,
        "leftovers of the failed attempt reached the blob"
    );
}

/// A ramfs mounted for one test: a filesystem that refuses `O_DIRECT` (since Linux 6.6 tmpfs
/// takes it).
struct Ramfs(tempfile::TempDir);

impl Ramfs {
    fn mount() -> Ramfs {
        let dir = disk_dir();
        let mounted = as_root(&["mount", "-t", "ramfs", "ramfs"], dir.path());
        assert!(
            mounted,
            "mounting a ramfs needs root or sudo, as scripts/test.sh's installs do"
        );
        Ramfs(dir)
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        as_root(&["umount"], self.0.path());
    }
}

/// Runs `command path` as root: directly when the tests are root, else through sudo.
fn as_root(command: &[&str], path: &Path) -> bool {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id(1)");
    let mut argv: Vec<&str> = command.to_vec();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        argv.insert(0, "sudo");
    }
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_filesystem_that_refuses_o_direct_gets_the_page_cache() {
    let ramfs = Ramfs::mount();
    let (store, backend) = store_on(ramfs.0.path());
    for seed in [4, 5] {
        let bytes = testkit::random_bytes(3 * MIB + 5, seed);
        let stored = push(&store, &bytes, &[MIB], &[100_000]).await;
        assert!(stored == bytes, "the blob differs from what was pushed");
    }
    assert_eq!(backend.direct_bytes(), 0);
}

#[tokio::test]
async fn direct_io_off_writes_nothing_direct() {
    let dir = disk_dir();
    let backend = FsBackend::new(dir.path(), true).direct_io(false);
    let store = Store::new(Arc::new(backend.clone()), 1 << 20);
    let bytes = testkit::random_bytes(2 * MIB, 5);
    assert!(push(&store, &bytes, &[], &[MIB]).await == bytes);
    assert_eq!(backend.direct_bytes(), 0);
}
