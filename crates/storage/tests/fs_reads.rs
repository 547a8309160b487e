//! Downloads from the filesystem backend read blocks into reused buffers: every range comes back
//! byte-exact across block boundaries, and the blocks one download still holds are not touched
//! by others reading into buffers from the same pool.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::ops::Range;

use bytes::Bytes;
use futures_util::StreamExt;
use storage::{Backend, FsBackend};

const MIB: usize = 1 << 20;

async fn blocks(backend: &FsBackend, key: &str, range: Option<Range<u64>>) -> Vec<Bytes> {
    let mut stream = backend.get(key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(block) = stream.next().await {
        out.push(block.unwrap());
    }
    out
}

#[tokio::test]
async fn ranges_across_block_boundaries_come_back_exact() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FsBackend::new(dir.path(), false);
    let data = testkit::random_bytes(5 * MIB + 777, 11);
    backend
        .put("blob", Bytes::from(data.clone()))
        .await
        .unwrap();
    let len = data.len() as u64;
    assert!(blocks(&backend, "blob", None).await.concat() == data);
    let mib = MIB as u64;
    for range in [
        0..1,
        mib - 1..mib + 1,
        4097..3 * mib + 5,
        len - 1..len,
        2 * mib..len,
        // Past the end: what the file holds.
        len - 10..len + 100,
    ] {
        let got = blocks(&backend, "blob", Some(range.clone())).await.concat();
        let want = &data[range.start as usize..(range.end.min(len)) as usize];
        assert!(got == want, "range {range:?}: {} bytes", got.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_held_by_one_download_survive_others_reading_into_pooled_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FsBackend::new(dir.path(), false);
    let first = testkit::random_bytes(4 * MIB, 1);
    backend
        .put("first", Bytes::from(first.clone()))
        .await
        .unwrap();
    let held = blocks(&backend, "first", None).await;
    // Eight downloads at once, their blocks dropped as they arrive: buffers go back to the pool
    // and are read into again while `held` still points into its own.
    let others: Vec<Vec<u8>> = (0..8)
        .map(|i| testkit::random_bytes(3 * MIB + i * 4096 + 1, 100 + i as u64))
        .collect();
    for (i, other) in others.iter().enumerate() {
        let key = format!("other{i}");
        backend.put(&key, Bytes::from(other.clone())).await.unwrap();
    }
    let reads = others.into_iter().enumerate().map(|(i, other)| {
        let backend = backend.clone();
        tokio::spawn(async move {
            let key = format!("other{i}");
            let mut stream = backend.get(&key, None).await.unwrap();
            let mut at = 0;
            while let Some(block) = stream.next().await {
                let block = block.unwrap();
                assert!(block[..] == other[at..at + block.len()], "other{i} at {at}");
                at += block.len();
            }
            assert_eq!(at, other.len());
        })
    });
    for read in futures_util::future::join_all(reads).await {
        read.unwrap();
    }
    assert!(held.concat() == first);
}
