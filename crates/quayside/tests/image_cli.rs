//! `quayside image name` and `quayside image pull-secret` as the controller and builder call them:
//! location from `DEIS_REGISTRY_LOCATION`, credentials from the mounted `registry-secret`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

fn image(location: &str, secret: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in secret {
        std::fs::write(dir.path().join(k), v).unwrap();
    }
    Command::new(BIN)
        .arg("image")
        .args(["--registry-secret-dir", &dir.path().display().to_string()])
        .args(args)
        .env("DEIS_REGISTRY_LOCATION", location)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

const OFF: &[(&str, &str)] = &[
    ("hostname", "myregistry.azurecr.io"),
    ("organization", "myorg"),
    ("username", "myusername"),
    ("password", "mypassword"),
];

#[test]
fn names_for_each_location() {
    let sha = ["name", "--app", "web", "--sha", "c0ffee00deadbeef"];
    assert_eq!(
        stdout(&image("on-cluster", &[], &sha)),
        "127.0.0.1:5555/web:git-c0ffee00"
    );
    assert_eq!(
        stdout(&image("off-cluster", OFF, &sha)),
        "myregistry.azurecr.io/myorg/web:git-c0ffee00"
    );
    let hub = [
        ("hostname", ""),
        ("organization", "myorg"),
        ("username", "u"),
        ("password", "p"),
    ];
    assert_eq!(
        stdout(&image("off-cluster", &hub, &sha)),
        "myorg/web:git-c0ffee00"
    );
    let ecr = [("region", "us-west-2"), ("registryid", "123456789012")];
    assert_eq!(
        stdout(&image(
            "ecr",
            &ecr,
            &["name", "--app", "web", "--version", "4"]
        )),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/web:v4"
    );
    let gcr = [
        ("key.json", r#"{"project_id":"example.com:proj"}"#),
        ("hostname", ""),
    ];
    assert_eq!(
        stdout(&image("gcr", &gcr, &sha)),
        "gcr.io/example.com/proj/web:git-c0ffee00"
    );
}

#[test]
fn bad_configuration_exits_64_and_names_the_file() {
    let out = image(
        "off-cluster",
        &[("hostname", "quay.io"), ("organization", "")],
        &["name", "--app", "a", "--version", "1"],
    );
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("organization is empty") || err.contains("organization"),
        "{err}"
    );
    assert!(
        err.contains("username") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("mypassword"));
}

#[test]
fn pull_secrets_follow_the_original_precedence() {
    let base = ["pull-secret", "--app", "web", "--image"];
    // off-cluster: the registry-secret's credentials under the registry's host.
    let mut args = base.to_vec();
    args.push("myregistry.azurecr.io/myorg/web:git-c0ffee00");
    let out: serde_json::Value =
        serde_json::from_str(&stdout(&image("off-cluster", OFF, &args))).unwrap();
    assert_eq!(
        out["imagePullSecrets"][0]["name"],
        "private-registry-off-cluster"
    );
    let secret = &out["secret"];
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(secret["metadata"]["namespace"], "web");
    use base64::Engine as _;
    let config = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let auth = config["auths"]["myregistry.azurecr.io"]["auth"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap(),
        b"myusername:mypassword"
    );

    // App credentials win; a Docker Hub image is keyed by Hub's URL.
    let mut args = base.to_vec();
    args.extend(["bob/private:1", "--username", "bob", "--password", "pw"]);
    let out: serde_json::Value =
        serde_json::from_str(&stdout(&image("on-cluster", &[], &args))).unwrap();
    assert_eq!(out["imagePullSecrets"][0]["name"], "private-registry");

    // ecr: a reference only (the refresher owns the secret); on-cluster: none.
    let mut args = base.to_vec();
    args.push("x");
    let out: serde_json::Value =
        serde_json::from_str(&stdout(&image("ecr", &[("region", "us-east-1")], &args))).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"imagePullSecrets": [{"name": "private-registry-ecr"}]})
    );
    let out: serde_json::Value =
        serde_json::from_str(&stdout(&image("on-cluster", &[], &args))).unwrap();
    assert_eq!(out, serde_json::json!({"imagePullSecrets": []}));
}

#[test]
fn ecr_names_ask_ecr_for_the_account() {
    let dir = testkit::secret_dir(&[
        ("accesskey", "AKIAIOSFODNN7EXAMPLE"),
        ("secretkey", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("region", "us-west-2"),
        ("registryid", ""),
        ("hostname", ""),
    ]);
    let out = Command::new(BIN)
        .args(["image", "--registry-secret-dir"])
        .arg(dir.path())
        .args(["name", "--app", "web", "--version", "3"])
        .env("DEIS_REGISTRY_LOCATION", "ecr")
        .env("AWS_ENDPOINT_URL", testkit::s3_endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/web:v3"
    );
}
