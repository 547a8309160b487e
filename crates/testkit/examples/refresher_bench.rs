//! Benchmark driver for `bench/refresher.sh`: N labelled namespaces on the fake Kubernetes API,
//! a local Google OAuth endpoint, and the real `quayside token-refresher` process. Prints how
//! long until every namespace has its secret, the API requests and token fetches it took, and
//! the refresher's peak RSS.
//!
//! Usage: refresher_bench <path to quayside> <namespaces>
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use testkit::kube::FakeKube;
use testkit::oauth::FakeOAuth;
use testkit::process::Quayside;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().expect("path to quayside");
    let n: usize = args.next().map_or(10_000, |s| s.parse().unwrap());
    let kube = FakeKube::start();
    kube.create_namespace("deis", &[]);
    for i in 0..n {
        kube.create_namespace(&format!("app-{i:05}"), &[("heritage", "deis")]);
    }
    let oauth = FakeOAuth::start(3600).await;
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = kube.write_kubeconfig(home.path());
    std::fs::write(home.path().join("key.json"), oauth.key_json()).unwrap();
    std::fs::write(home.path().join("hostname"), "").unwrap();
    let started = Instant::now();
    let refresher = tokio::task::block_in_place(|| {
        Quayside::token_refresher(
            &bin,
            home.path(),
            &[
                ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                ("DEIS_REGISTRY_LOCATION", "gcr"),
                ("POD_NAMESPACE", "deis"),
                ("RUST_LOG", "warn,quayside=info"),
            ],
        )
    });
    let written = |kube: &FakeKube| {
        (0..n)
            .filter(|i| {
                kube.get("secrets", &format!("app-{i:05}"), "private-registry-gcr")
                    .is_some()
            })
            .count()
    };
    loop {
        let done = written(&kube);
        if done == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {done} of {n} secrets after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    // Settle: a steady state must not keep writing.
    let patches = kube.requests("PATCH", "/secrets/");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let patches_after = kube.requests("PATCH", "/secrets/");
    println!("namespaces            {n}");
    println!(
        "all secrets written   {:.2} s (from process start)",
        elapsed.as_secs_f64()
    );
    println!(
        "secret PATCHes        {patches} (+{} in the next 3 s)",
        patches_after - patches
    );
    println!(
        "other API requests    {} GET namespaces, {} GET secrets, {} lease",
        kube.requests("GET", "/api/v1/namespaces"),
        kube.requests("GET", "/api/v1/secrets"),
        kube.requests("PATCH", "/leases/") + kube.requests("GET", "/leases/")
    );
    println!("token fetches         {}", oauth.granted());
    println!(
        "peak RSS              {:.1} MiB",
        refresher.peak_rss_kib() as f64 / 1024.0
    );
}
