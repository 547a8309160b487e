//! The refresher through the real kube client, over HTTP, against the fake API server
//! (testkit::kube), with real credential issuers: static off-cluster credentials and a local
//! Google OAuth endpoint that checks the signed assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use refresher::{Config, Lease, Shared, Source};
use secrets::SecretDir;
use serde_json::Value;
use testkit::kube::FakeKube;
use testkit::oauth::FakeOAuth;
use tokio::sync::oneshot;

const OFF: &str = "private-registry-off-cluster";
const GCR: &str = "private-registry-gcr";
const APP: &[(&str, &str)] = &[("heritage", "deis")];

fn config(secret_name: &str) -> Config {
    Config {
        secret_name: secret_name.into(),
        selector: "heritage=deis".into(),
        include: vec![],
        exclude: vec![],
        token_refresh: None,
        resync: Duration::from_secs(300),
        service_accounts: vec![],
        concurrency: 8,
        fetch_timeout: Duration::from_secs(30),
        lease: None,
    }
}

fn write_creds(dir: &Path, files: &[(&str, &str)]) {
    for (k, v) in files {
        std::fs::write(dir.join(k), v).unwrap();
    }
}

fn off_cluster_source(dir: &Path) -> Source {
    write_creds(
        dir,
        &[
            ("hostname", "registry.example.com"),
            ("organization", "acme"),
            ("username", "deploy"),
            ("password", "s3cret-password"),
        ],
    );
    Source {
        location: "off-cluster".into(),
        creds: SecretDir::new(dir),
        options: Default::default(),
    }
}

fn gcr_source(dir: &Path, oauth: &FakeOAuth) -> Source {
    write_creds(dir, &[("key.json", oauth.key_json()), ("hostname", "")]);
    Source {
        location: "gcr".into(),
        creds: SecretDir::new(dir),
        options: Default::default(),
    }
}

struct Running {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), refresher::Error>>,
}

impl Running {
    fn start(kube: &FakeKube, config: Config, source: Source) -> Running {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(refresher::run(
            kube.client(),
            config,
            source,
            shared.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            shared,
            stop: Some(stop),
            task,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        self.shared
            .metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("refresher stops")
            .unwrap()
            .unwrap();
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `auths` map of the pull secret in `ns`, if it exists.
fn auths(kube: &FakeKube, ns: &str, name: &str) -> Option<Value> {
    let secret = kube.get("secrets", ns, name)?;
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][".dockerconfigjson"].as_str()?)
        .unwrap();
    let v: Value = serde_json::from_slice(&raw).unwrap();
    Some(v["auths"].clone())
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test]
async fn writes_every_app_namespace_heals_and_skips_dying_ones() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("app1", APP);
    kube.create_namespace("app2", APP);
    kube.create_namespace("kube-system", &[]);
    kube.create_namespace("dying", APP);
    kube.terminate_namespace("dying");
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(&kube, config(OFF), off_cluster_source(dir.path()));

    let expected =
        serde_json::json!({"registry.example.com": {"auth": basic("deploy", "s3cret-password")}});
    wait_for("both app secrets", || {
        auths(&kube, "app1", OFF).is_some() && auths(&kube, "app2", OFF).is_some()
    })
    .await;
    assert_eq!(auths(&kube, "app1", OFF).unwrap(), expected);
    assert!(kube.get("secrets", "kube-system", OFF).is_none());
    assert!(kube.get("secrets", "dying", OFF).is_none());

    // A new namespace, a deleted secret, an edited secret: each repaired from the watch.
    kube.create_namespace("app3", APP);
    wait_for("new namespace", || auths(&kube, "app3", OFF).is_some()).await;
    assert!(kube.delete("secrets", "app1", OFF));
    kube.edit_secret(
        "app2",
        OFF,
        serde_json::json!({".dockerconfigjson": "e30="}),
    );
    wait_for("deleted and edited secrets restored", || {
        auths(&kube, "app1", OFF) == Some(expected.clone())
            && auths(&kube, "app2", OFF) == Some(expected.clone())
    })
    .await;
    // A namespace deleted and created again under the same name (Deis never healed this).
    kube.delete_namespace("app3");
    kube.create_namespace("app3", APP);
    wait_for("recreated namespace", || {
        auths(&kube, "app3", OFF).is_some()
    })
    .await;

    // Updated in place with server-side apply, never deleted and created.
    assert_eq!(kube.requests("DELETE", "/secrets"), 0);
    assert_eq!(kube.requests("POST", "/secrets"), 0);
    assert_eq!(kube.requests("PUT", "/secrets"), 0);
    assert_eq!(r.metric("quayside_refresher_secrets_written_total"), 6.0);
    assert_eq!(
        r.metric("quayside_refresher_errors_total{kind=\"kube\"}"),
        0.0
    );
    assert!(r.shared.ready());
    r.stop().await;
}

#[tokio::test]
async fn service_accounts_get_the_secret_appended() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("app1", APP);
    kube.create_service_account("app1", "default");
    let client = kube.client();
    let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client, "app1");
    let existing = serde_json::json!({"imagePullSecrets": [{"name": "theirs"}]});
    api.patch(
        "default",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(&existing),
    )
    .await
    .unwrap();
    kube.create_namespace("late", APP);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(OFF);
    c.service_accounts = vec!["default".into()];
    let r = Running::start(&kube, c, off_cluster_source(dir.path()));

    let names = |ns: &str| -> Vec<String> {
        kube.get("serviceaccounts", ns, "default")
            .and_then(|sa| sa["imagePullSecrets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_for("ServiceAccount patched", || names("app1").len() == 2).await;
    assert_eq!(names("app1"), ["theirs", OFF]);
    // The ServiceAccount appears after the namespace, as the controller-manager makes it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    kube.create_service_account("late", "default");
    wait_for("late ServiceAccount patched", || names("late") == [OFF]).await;
    r.stop().await;
}

#[tokio::test]
async fn api_errors_and_lost_watches_are_retried() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("app1", APP);
    kube.fail("GET", "/api/v1/namespaces", 500, 1);
    kube.fail("PATCH", "/secrets/", 500, 2);
    kube.fail("PATCH", "/secrets/", 409, 1);
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(&kube, config(OFF), off_cluster_source(dir.path()));
    wait_for("secret despite 500, 500, 409", || {
        auths(&kube, "app1", OFF).is_some()
    })
    .await;
    assert_eq!(kube.requests("PATCH", "/secrets/"), 4);
    assert!(r.metric("quayside_refresher_errors_total{kind=\"kube\"}") >= 3.0);

    // The API server forgets old resourceVersions and drops the watches: 410 Gone on resume,
    // then a fresh list, and new namespaces are still served.
    let lists_before = kube.requests("GET", "/api/v1/namespaces");
    kube.compact();
    kube.create_namespace("app2", APP);
    wait_for("secret after 410 Gone", || {
        auths(&kube, "app2", OFF).is_some()
    })
    .await;
    assert!(kube.requests("GET", "/api/v1/namespaces") > lists_before + 1);
    r.stop().await;
}

#[tokio::test]
async fn gcr_tokens_are_refreshed_before_they_expire_with_one_fetch_per_cycle() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    for ns in ["a", "b", "c"] {
        kube.create_namespace(ns, APP);
    }
    // 24 s tokens: refreshed at about 12 s.
    let oauth = FakeOAuth::start(24).await;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let r = Running::start(&kube, config(GCR), gcr_source(dir.path(), &oauth));
    let token = |ns: &str| auths(&kube, ns, GCR).map(|a| a["gcr.io"]["auth"].clone());
    let first = Value::from(basic("oauth2accesstoken", "ya29.test-token-1"));
    wait_for("first token everywhere", || {
        ["a", "b", "c"]
            .iter()
            .all(|ns| token(ns) == Some(first.clone()))
    })
    .await;
    assert_eq!(oauth.granted(), 1, "one fetch for three namespaces");
    let second = Value::from(basic("oauth2accesstoken", "ya29.test-token-2"));
    wait_for("second token everywhere", || {
        ["a", "b", "c"]
            .iter()
            .all(|ns| token(ns) == Some(second.clone()))
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_secs(9) && elapsed < Duration::from_secs(20),
        "refreshed after {elapsed:?}, expected about 12 s of a 24 s token"
    );
    assert_eq!(oauth.granted(), 2);
    assert_eq!(oauth.refused(), 0);
    // The Google key never leaves the refresher.
    for ns in ["a", "b", "c"] {
        let secret = kube.get("secrets", ns, GCR).unwrap().to_string();
        assert!(!secret.contains("PRIVATE KEY") && !secret.contains("private_key"));
    }
    assert!(r.metric("quayside_refresher_token_expiry_timestamp_seconds") > 0.0);
    r.stop().await;
}

#[tokio::test]
async fn an_outage_keeps_the_last_good_token_and_recovers() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("app1", APP);
    let oauth = FakeOAuth::start(3600).await;
    oauth.set_outage(true);
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(&kube, config(GCR), gcr_source(dir.path(), &oauth));
    wait_for("errors counted", || {
        r.metric("quayside_refresher_errors_total{kind=\"unavailable\"}") >= 2.0
    })
    .await;
    assert!(kube.get("secrets", "app1", GCR).is_none());
    assert!(!r.shared.ready(), "not ready without a credential");
    oauth.set_outage(false);
    wait_for("secret after recovery", || {
        auths(&kube, "app1", GCR).is_some()
    })
    .await;
    assert!(r.shared.ready());

    // The registry-secret changes while the issuer is down: the old secret stays as it is
    // until a new token can be had.
    oauth.set_outage(true);
    write_creds(dir.path(), &[("hostname", "eu.gcr.io")]);
    wait_for("refetch attempted after the secret changed", || {
        r.metric("quayside_refresher_errors_total{kind=\"unavailable\"}") >= 3.0
    })
    .await;
    assert!(auths(&kube, "app1", GCR).unwrap()["gcr.io"].is_object());
    oauth.set_outage(false);
    wait_for("new host after recovery", || {
        auths(&kube, "app1", GCR).is_some_and(|a| a["eu.gcr.io"].is_object())
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn an_issuer_that_never_answers_counts_as_a_failure_and_is_retried() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("app1", APP);
    let oauth = FakeOAuth::start(3600).await;
    oauth.set_silent(true);
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        fetch_timeout: Duration::from_millis(300),
        ..config(GCR)
    };
    let r = Running::start(&kube, config, gcr_source(dir.path(), &oauth));
    wait_for("two fetches timed out", || {
        r.metric("quayside_refresher_errors_total{kind=\"timeout\"}") >= 2.0
    })
    .await;
    assert!(kube.get("secrets", "app1", GCR).is_none());
    oauth.set_silent(false);
    wait_for("secret once the issuer answers", || {
        auths(&kube, "app1", GCR).is_some()
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_never_written_and_does_not_spin() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("app1", APP);
    let oauth = FakeOAuth::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(&kube, config(GCR), gcr_source(dir.path(), &oauth));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(kube.get("secrets", "app1", GCR).is_none());
    // Back-off 1 s, 2 s, 4 s...: at most 3 fetches in 4 s, not thousands.
    let fetches = oauth.granted();
    assert!((1..=3).contains(&fetches), "{fetches} fetches in 4 s");
    assert!(r.metric("quayside_refresher_errors_total{kind=\"expired\"}") >= 1.0);
    r.stop().await;
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_handover() {
    testkit::install_crypto();
    let kube = FakeKube::start();
    kube.create_namespace("deis", &[]);
    kube.create_namespace("app1", APP);
    let dir = tempfile::tempdir().unwrap();
    let source = off_cluster_source(dir.path());
    let replica = |identity: &str| {
        let mut c = config(OFF);
        c.lease = Some(Lease {
            namespace: "deis".into(),
            name: "quayside-token-refresher".into(),
            identity: identity.into(),
            duration: Duration::from_secs(3),
        });
        Running::start(&kube, c, source.clone())
    };
    let a = replica("a");
    let b = replica("b");
    let leader_metric = "quayside_refresher_leader";
    wait_for("one leader", || {
        a.metric(leader_metric) + b.metric(leader_metric) == 1.0
    })
    .await;
    wait_for("secret", || auths(&kube, "app1", OFF).is_some()).await;
    let holder = |kube: &FakeKube| {
        kube.get("leases", "deis", "quayside-token-refresher")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    let (leader, standby, standby_name) = if a.metric(leader_metric) == 1.0 {
        (a, b, "b")
    } else {
        (b, a, "a")
    };
    assert_ne!(holder(&kube).as_deref(), Some(standby_name));
    // For a while, still exactly one leader and only it writes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(standby.metric(leader_metric), 0.0);
    assert_eq!(
        standby.metric("quayside_refresher_secrets_written_total"),
        0.0
    );
    assert!(standby.shared.ready(), "a standby is ready");

    leader.stop().await;
    wait_for("standby takes over", || {
        standby.metric(leader_metric) == 1.0
    })
    .await;
    assert_eq!(holder(&kube).as_deref(), Some(standby_name));
    kube.create_namespace("app2", APP);
    wait_for("new leader writes", || auths(&kube, "app2", OFF).is_some()).await;
    assert_eq!(
        standby.metric("quayside_refresher_secrets_written_total"),
        1.0
    );
    standby.stop().await;
}
