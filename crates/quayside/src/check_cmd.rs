//! `quayside check`: one screen of what works and what does not for the configured location.
//! Each check prints one line (`ok` or `failed`, what was checked, and for a failure the key or
//! file and the fix); every check runs even after one failed, and the exit code is 1 when any
//! did. Nothing secret is printed: errors come from the same code paths the components use,
//! which never carry a secret.
//!
//! What is checked follows the location: on-cluster opens storage as the registry does and
//! writes, reads back and deletes a probe object; ecr and gcr mint a token and ask the API
//! server whether the identity running this may do what the token refresher does; off-cluster
//! logs into the registry. `--registry-url` and `--proxy-url` add a `GET /v2/` through each.

use std::time::{Duration, SystemTime};

use images::Location;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};

use crate::credentials_cmd::LocationArgs;
use crate::registry_cmd::StorageArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    location: LocationArgs,
    #[command(flatten)]
    storage: StorageArgs,
    /// For on-cluster, open the storage and write a probe object (off where the registry's disk
    /// is not this process's to see, as in the chart's test pod for filesystem storage).
    #[arg(long, env = "QUAYSIDE_CHECK_STORAGE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    storage_check: bool,
    /// The registry as clients reach it (e.g. `http://deis-registry`): checked with `GET /v2/`.
    #[arg(long, env = "QUAYSIDE_CHECK_REGISTRY_URL")]
    registry_url: Option<String>,
    /// A node proxy (e.g. `http://127.0.0.1:5555`): `GET /v2/` through it must reach the registry.
    #[arg(long, env = "QUAYSIDE_CHECK_PROXY_URL")]
    proxy_url: Option<String>,
    /// For ecr and gcr, ask the API server (SelfSubjectAccessReview) whether the identity running
    /// the check may do each thing the token refresher does; run it as the refresher's service
    /// account (the chart's test hook does).
    #[arg(long, env = "QUAYSIDE_CHECK_RBAC", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    rbac: bool,
    /// The refresher's secrets are named `<prefix>-<location>`.
    #[arg(
        long,
        env = "DEIS_REGISTRY_SECRET_PREFIX",
        default_value = "private-registry"
    )]
    secret_prefix: String,
    /// Where the refresher holds its Lease (the release's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "deis")]
    lease_namespace: String,
    #[arg(
        long,
        env = "QUAYSIDE_LEASE_NAME",
        default_value = "quayside-token-refresher"
    )]
    lease_name: String,
}

/// Some checks failed (each printed its line).
#[derive(Debug, thiserror::Error)]
#[error("{0} check(s) failed")]
pub struct Failed(usize);

/// The lines printed so far, and how many failed.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("ok      {what:<16} {detail}");
    }

    fn failed(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.failed += 1;
        println!("failed  {what:<16} {detail}");
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut report = Report::default();
    match args.location.load() {
        Ok(location) => {
            let detail = match location {
                Location::OnCluster { .. } => "on-cluster".to_owned(),
                _ => format!(
                    "{}: every key it needs in {} is present and well-formed",
                    location.name(),
                    args.location.registry_secret_dir.display()
                ),
            };
            report.ok("location", detail);
            match &location {
                Location::OnCluster { .. } if args.storage_check => {
                    check_storage(&mut report, args.storage).await;
                }
                Location::OnCluster { .. } => {}
                Location::OffCluster(o) => check_login(&mut report, o).await,
                Location::Ecr(_) | Location::Gcr(_) => {
                    check_token(&mut report, &location, &args.location).await;
                    if args.rbac {
                        let secret = format!("{}-{}", args.secret_prefix, location.name());
                        check_rbac(
                            &mut report,
                            &secret,
                            &args.lease_namespace,
                            &args.lease_name,
                        )
                        .await;
                    }
                }
            }
        }
        Err(e) => {
            for line in e.to_string().lines() {
                report.failed("location", line);
            }
        }
    }
    if let Some(url) = &args.registry_url {
        check_v2(&mut report, "registry", url).await;
    }
    if let Some(url) = &args.proxy_url {
        check_v2(&mut report, "proxy", url).await;
    }
    match report.failed {
        0 => Ok(()),
        n => Err(Failed(n).into()),
    }
}

async fn check_storage(report: &mut Report, storage: StorageArgs) {
    let (store, described) = match storage.open().await {
        Ok(opened) => opened,
        Err(e) => return report.failed("storage", format!("{e:#}")),
    };
    report.ok("storage", format!("{described}: reachable"));
    match store.check_writable().await {
        Ok(key) => report.ok(
            "storage",
            format!("{described}: wrote, read back and deleted {key}"),
        ),
        Err(e) => report.failed(
            "storage",
            format!(
                "{described}: a write failed ({e}): give the registry's identity write access to it"
            ),
        ),
    }
}

async fn check_login(report: &mut Report, location: &images::location::OffCluster) {
    let host = match images::bare_host(&location.hostname) {
        "" => images::DOCKER_HUB_API,
        host => host,
    };
    let credentials = registry_client::Credentials {
        username: location.username.clone(),
        password: location.password.clone(),
    };
    let client = registry_client::Client::new(host, Some(credentials));
    match client.login().await {
        Ok(()) => report.ok(
            "login",
            format!("{host}: accepted username {}", location.username),
        ),
        Err(e) => report.failed(
            "login",
            format!("{e}: check hostname, username and password in the registry-secret"),
        ),
    }
}

async fn check_token(report: &mut Report, location: &Location, args: &LocationArgs) {
    let Some(provider) = credentials::Provider::new(location, &args.options()).await else {
        return;
    };
    match provider.fetch().await {
        Ok(credential) if !credential.is_valid_at(SystemTime::now()) => report.failed(
            "token",
            format!(
                "{} handed out a token that has already expired: is this machine's clock right? (the refresher will not write it)",
                credential.registry
            ),
        ),
        Ok(credential) => {
            let lifetime = credential
                .remaining(SystemTime::now())
                .map_or("long-lived".to_owned(), |left| {
                    format!("valid for {}", round_minutes(left))
                });
            report.ok(
                "token",
                format!("{} accepted the credentials: {lifetime}", credential.registry),
            );
        }
        Err(e) => report.failed("token", e),
    }
}

fn round_minutes(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs() / 60 * 60)).to_string()
}

/// What the token refresher does with the API, as the chart's RBAC grants it: (API group,
/// resource, verb, namespace, name); an empty namespace means every namespace.
fn refresher_access<'a>(
    secret: &'a str,
    lease_namespace: &'a str,
    lease: &'a str,
) -> Vec<(&'static str, &'static str, &'static str, &'a str, &'a str)> {
    let mut access = vec![
        ("", "namespaces", "list", "", ""),
        ("", "namespaces", "watch", "", ""),
    ];
    for verb in ["get", "list", "watch", "create", "patch"] {
        access.push(("", "secrets", verb, "", secret));
    }
    access.push((
        "coordination.k8s.io",
        "leases",
        "create",
        lease_namespace,
        "",
    ));
    for verb in ["get", "patch", "update"] {
        access.push((
            "coordination.k8s.io",
            "leases",
            verb,
            lease_namespace,
            lease,
        ));
    }
    access
}

async fn check_rbac(report: &mut Report, secret: &str, lease_namespace: &str, lease: &str) {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            return report.failed(
                "rbac",
                format!(
                    "no Kubernetes API ({e}): run the check in the cluster or set KUBECONFIG, or pass --rbac=false"
                ),
            );
        }
    };
    let reviews: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client);
    for (group, resource, verb, namespace, name) in refresher_access(secret, lease_namespace, lease)
    {
        let what = describe_access(resource, verb, namespace, name);
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    verb: Some(verb.to_owned()),
                    namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                    name: (!name.is_empty()).then(|| name.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match reviews.create(&Default::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {
                report.ok("rbac", format!("may {what}"));
            }
            Ok(_) => report.failed(
                "rbac",
                format!(
                    "may not {what}: the token refresher needs it; grant it in the refresher's ClusterRole/Role (the chart's token-refresher.yaml)"
                ),
            ),
            Err(e) => report.failed("rbac", format!("cannot ask whether it may {what}: {e}")),
        }
    }
}

fn describe_access(resource: &str, verb: &str, namespace: &str, name: &str) -> String {
    let object = match name {
        "" => resource.to_owned(),
        name => format!("{resource}/{name}"),
    };
    match namespace {
        "" => format!("{verb} {object} in every namespace"),
        ns => format!("{verb} {object} in namespace {ns}"),
    }
}

/// `GET <url>/v2/`: 200 (open) or 401 (asks for credentials) means the registry answered.
async fn check_v2(report: &mut Report, what: &str, url: &str) {
    let url = format!("{}/v2/", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => {
            report.ok(what, format!("{url}: answered {}", resp.status()));
        }
        Ok(resp) if resp.status() == reqwest::StatusCode::UNAUTHORIZED => {
            report.ok(what, format!("{url}: answered 401, asking for credentials"))
        }
        Ok(resp) => report.failed(
            what,
            format!(
                "{url}: answered {}: {}",
                resp.status(),
                unreachable_fix(what)
            ),
        ),
        Err(e) => report.failed(
            what,
            format!("{url}: {}: {}", e.without_url(), unreachable_fix(what)),
        ),
    }
}

fn unreachable_fix(what: &str) -> &'static str {
    if what == "proxy" {
        "the proxy does not reach the registry (is the registry Service up, and REGISTRY_HOST/REGISTRY_PORT right?)"
    } else {
        "the registry does not answer (are its pods ready? see their logs)"
    }
}
