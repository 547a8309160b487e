//! `quayside credentials` and `quayside token-refresher` as processes: ECR on moto (static keys,
//! web identity, a refused key with moto's signature checking on), GCR on a local OAuth
//! endpoint, the kubelet credential-provider protocol, and the refresher against the fake
//! Kubernetes API through a kubeconfig.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use testkit::kube::FakeKube;
use testkit::oauth::FakeOAuth;
use testkit::process::Quayside;
use testkit::tools::Moto;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn creds(files: &[(&str, &str)]) -> tempfile::TempDir {
    testkit::secret_dir(files)
}

/// `quayside credentials` with only the AWS settings a test gives (no profile, no IMDS).
fn credentials(location: &str, dir: &Path, env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "credentials",
        "--location",
        location,
        "--registry-secret-dir",
    ])
    .arg(dir)
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .env_remove("AWS_SESSION_TOKEN")
    .env_remove("AWS_PROFILE")
    .env("AWS_CONFIG_FILE", "/nonexistent")
    .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .envs(env.iter().copied())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.arg("--kubelet-plugin");
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A CredentialProviderResponse's `cacheDuration` (`"1800s"`) in seconds.
fn cache_seconds(response: &Value) -> u64 {
    let duration = response["cacheDuration"].as_str().unwrap();
    duration.trim_end_matches('s').parse().unwrap()
}

fn decode(auth: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(auth.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn ecr_with_static_keys() {
    let dir = creds(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
        ("registryid", ""),
        ("hostname", ""),
    ]);
    let endpoint = testkit::s3_endpoint();
    let out = json_out(&credentials(
        "ecr",
        dir.path(),
        &[("AWS_ENDPOINT_URL", &endpoint)],
        None,
    ));
    let auths = out["auths"].as_object().unwrap();
    let (host, entry) = auths.iter().next().unwrap();
    // As Workflow's refresher wrote it: ECR's proxyEndpoint as the key, and an email.
    assert_eq!(host, "https://123456789012.dkr.ecr.us-west-2.amazonaws.com");
    assert!(decode(&entry["auth"]).starts_with("AWS:"));
    assert_eq!(entry["email"], "none@none.com");
    assert!(!out.to_string().contains(SECRET_KEY));
}

#[test]
fn ecr_hostname_overrides_the_auths_key() {
    let dir = creds(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
        ("hostname", "registry.internal.example.com"),
    ]);
    let endpoint = testkit::s3_endpoint();
    let output = credentials("ecr", dir.path(), &[("AWS_ENDPOINT_URL", &endpoint)], None);
    let out = json_out(&output);
    assert!(out["auths"]["registry.internal.example.com"].is_object());
    assert!(String::from_utf8_lossy(&output.stderr).contains("leave them empty"));
}

#[test]
fn ecr_with_web_identity() {
    // No keys in the secret: the default chain finds AWS_ROLE_ARN + the token file (IRSA).
    let dir = creds(&[
        ("accesskey", ""),
        ("secretkey", ""),
        ("region", "eu-west-1"),
    ]);
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    let endpoint = testkit::s3_endpoint();
    let out = json_out(&credentials(
        "ecr",
        dir.path(),
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/quayside"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_SESSION_NAME", "quayside-test"),
        ],
        None,
    ));
    assert!(out["auths"]["https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"].is_object());
}

#[test]
fn ecr_refusing_the_key_is_a_clear_error() {
    // moto checks signatures against its IAM users when no unauthenticated actions are allowed.
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let dir = creds(&[
        ("accesskey", "AKIAWRONGWRONGWRONG1"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
    ]);
    let out = credentials(
        "ecr",
        dir.path(),
        &[("AWS_ENDPOINT_URL", &moto.endpoint())],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused the credentials") && stderr.contains("accesskey and secretkey"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET_KEY),
        "the secret key leaked: {stderr}"
    );
}

#[test]
fn bad_settings_name_the_file_and_the_fix() {
    let dir = creds(&[("accesskey", ""), ("secretkey", "")]);
    let out = credentials("ecr", dir.path(), &[], None);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let region = dir.path().join("region");
    assert!(
        stderr.contains(&format!(
            "{} does not exist: ECR needs a region",
            region.display()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gcr_as_a_kubelet_credential_provider() {
    let oauth = FakeOAuth::start(3600).await;
    let dir = creds(&[("key.json", oauth.key_json()), ("hostname", "")]);
    let request = r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"gcr.io/my-project/web:v3"}"#;
    let path = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || credentials("gcr", &path, &[], Some(request)))
        .await
        .unwrap();
    let response = json_out(&out);
    assert_eq!(response["kind"], "CredentialProviderResponse");
    assert_eq!(response["cacheKeyType"], "Registry");
    let seconds = cache_seconds(&response);
    assert!((1790..=1800).contains(&seconds), "{seconds}");
    assert_eq!(
        response["auth"]["gcr.io"],
        serde_json::json!({"username": "oauth2accesstoken", "password": "ya29.test-token-1"})
    );
    assert_eq!(oauth.granted(), 1);
}

#[test]
fn token_refresher_process_writes_secrets_and_reports() {
    let kube = FakeKube::start();
    kube.create_namespace("deis", &[]);
    kube.create_namespace("web", &[("heritage", "deis")]);
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = kube.write_kubeconfig(home.path());
    let dir = creds(&[
        ("hostname", ""),
        ("organization", "acme"),
        ("username", "deploy"),
        ("password", "hub-password"),
    ]);
    let refresher = Quayside::token_refresher(
        BIN,
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("DEIS_REGISTRY_LOCATION", "off-cluster"),
            ("DEIS_NAMESPACE_REFRESH_TIME", "5"),
            ("DEIS_TOKEN_REFRESH_TIME", ""),
            ("POD_NAMESPACE", "deis"),
            ("POD_NAME", "refresher-0"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while kube
        .get("secrets", "web", "private-registry-off-cluster")
        .is_none()
    {
        assert!(Instant::now() < deadline, "no secret written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lease = kube
        .get("leases", "deis", "quayside-token-refresher")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "refresher-0");
    let (status, _) = testkit::http_get(refresher.addr, "/readyz");
    assert_eq!(status, 200);
    let (_, metrics) = testkit::http_get(refresher.addr, "/metrics");
    assert!(
        metrics.contains("quayside_refresher_secrets_written_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("quayside_refresher_leader 1"), "{metrics}");
    assert!(!metrics.contains("hub-password"));
}

#[test]
fn token_refresher_refuses_bad_settings_and_ignores_on_cluster() {
    let dir = creds(&[]);
    let run = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["token-refresher", "--registry-secret-dir"])
            .arg(dir.path())
            .env("KUBECONFIG", "/nonexistent")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = run(&[("DEIS_REGISTRY_LOCATION", "on-cluster")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to refresh"));
    let out = run(&[
        ("DEIS_REGISTRY_LOCATION", "gcr"),
        ("DEIS_TOKEN_REFRESH_TIME", "11h"),
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEIS_TOKEN_REFRESH_TIME=\"11h\""));
}

#[test]
fn ecr_without_any_credentials_says_so_in_one_line() {
    let dir = creds(&[
        ("accesskey", ""),
        ("secretkey", ""),
        ("region", "us-west-2"),
    ]);
    let endpoint = testkit::s3_endpoint();
    let out = credentials("ecr", dir.path(), &[("AWS_ENDPOINT_URL", &endpoint)], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(
            "no AWS credentials found: set accesskey and secretkey in the registry-secret"
        ),
        "{stderr}"
    );
    assert!(errors[0].contains("IRSA"));
    assert!(errors[0].len() < 400, "{}", errors[0]);
    assert!(!stderr.contains("DispatchFailure"), "{stderr}");
}

/// ECR end to end with tokens that expire in the future, as the real service's do (12 hours):
/// the refresher process mints one from moto, writes it into the app's namespace in the shape
/// Workflow's refresher wrote, and references it from the default service account; the kubelet
/// plugin answers the same token for an image of that registry, cached for half its lifetime.
#[test]
fn ecr_tokens_reach_app_namespaces_and_the_kubelet() {
    let moto = Moto::with_ecr_tokens_expiring_in(Duration::from_secs(12 * 3600));
    let kube = FakeKube::start();
    kube.create_namespace("deis", &[]);
    kube.create_namespace("web", &[("heritage", "deis")]);
    kube.create_service_account("web", "default");
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = kube.write_kubeconfig(home.path());
    let dir = creds(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", SECRET_KEY),
        ("region", "us-west-2"),
        ("registryid", ""),
        ("hostname", ""),
    ]);
    let endpoint = moto.endpoint();
    let aws = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let mut env = vec![
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("DEIS_REGISTRY_LOCATION", "ecr"),
        ("DEIS_NAMESPACE_REFRESH_TIME", "5"),
        ("DEIS_TOKEN_REFRESH_TIME", ""),
        ("POD_NAMESPACE", "deis"),
        ("POD_NAME", "refresher-0"),
        ("QUAYSIDE_PULL_SECRET_SERVICE_ACCOUNTS", "default"),
    ];
    env.extend(aws);
    let refresher = Quayside::token_refresher(BIN, dir.path(), &env);

    let deadline = Instant::now() + Duration::from_secs(20);
    let secret = loop {
        if let Some(s) = kube.get("secrets", "web", "private-registry-ecr") {
            break s;
        }
        assert!(Instant::now() < deadline, "no ECR secret written");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let config: Value =
        serde_json::from_str(&decode(&secret["data"][".dockerconfigjson"])).unwrap();
    let auths = config["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 1, "{config}");
    let entry = &auths["https://123456789012.dkr.ecr.us-west-2.amazonaws.com"];
    assert_eq!(decode(&entry["auth"]), "AWS:123456789012-auth-token");
    assert_eq!(entry["email"], "none@none.com");
    let referenced = serde_json::json!([{"name": "private-registry-ecr"}]);
    while kube.get("serviceaccounts", "web", "default").unwrap()["imagePullSecrets"] != referenced {
        assert!(
            Instant::now() < deadline,
            "the service account does not reference it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = testkit::http_get(refresher.addr, "/metrics");
    assert!(
        metrics.contains("quayside_refresher_secrets_written_total 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("kind=\"expired\""), "{metrics}");
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quayside_refresher_token_expiry_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry - now - 12.0 * 3600.0).abs() < 60.0,
        "{expiry} vs {now}"
    );
    assert!(!metrics.contains(SECRET_KEY));

    let request = r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"123456789012.dkr.ecr.us-west-2.amazonaws.com/web:v3"}"#;
    let response = json_out(&credentials("ecr", dir.path(), &aws, Some(request)));
    assert_eq!(response["cacheKeyType"], "Registry");
    let seconds = cache_seconds(&response);
    assert!((6 * 3600 - 10..=6 * 3600).contains(&seconds), "{seconds}");
    assert_eq!(
        response["auth"]["123456789012.dkr.ecr.us-west-2.amazonaws.com"],
        serde_json::json!({"username": "AWS", "password": "123456789012-auth-token"})
    );
}
