//! The Helm chart (`charts/quayside`) through the real `helm` binary (v4, installed by the test
//! command): lint and render the brief's examples (`charts/examples`) and each on-cluster storage
//! backend, assert on the parsed objects, check that the schema and the chart's own checks reject
//! bad values with a message an operator can act on, and that every env var and mounted path the
//! chart sets is one the `quayside` binary reads.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;
use testkit::chart::{container, find, helm, pod, render, secret_data, template_args};

const BIN: &str = env!("CARGO_BIN_EXE_quayside");
const CREDS: &str = "/var/run/secrets/deis/registry/creds";

fn refused(example: Option<&str>, sets: &[&str]) -> String {
    let out = helm(&template_args(example, sets));
    assert!(!out.status.success(), "{sets:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

fn env(workload: &Value, name: &str) -> Option<String> {
    container(workload)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap_or("<valueFrom>").to_owned())
}

fn assert_hardened(workload: &Value) {
    let pod = pod(workload);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &container(workload)["securityContext"];
    assert_eq!(c["readOnlyRootFilesystem"], true);
    assert_eq!(c["allowPrivilegeEscalation"], false);
    assert_eq!(c["capabilities"]["drop"][0], "ALL");
    assert!(container(workload)["resources"]["requests"]["memory"].is_string());
}

#[test]
fn lint_passes_for_defaults_and_every_example() {
    for example in [
        None,
        Some("examples/ecr.yaml"),
        Some("examples/gcr.yaml"),
        Some("examples/acr.yaml"),
        Some("examples/quay.yaml"),
    ] {
        let mut args = vec!["lint", "quayside", "--strict"];
        if let Some(e) = example {
            args.extend(["-f", e]);
        }
        let out = helm(&args);
        assert!(
            out.status.success(),
            "{example:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn off_cluster_examples_render_only_the_registry_secret() {
    for (example, host) in [
        ("examples/acr.yaml", "myregistry.azurecr.io"),
        ("examples/quay.yaml", "quay.io"),
    ] {
        let objects = render(Some(example), &[]);
        // The registry-secret, and the `helm test` Pod that logs into the registry with it.
        assert_eq!(
            kinds(&objects),
            ["Pod/deis-registry-check", "Secret/registry-secret"]
        );
        let secret = find(&objects, "Secret", "registry-secret");
        assert_eq!(
            secret["metadata"]["annotations"]["deis.io/registry-location"],
            "off-cluster"
        );
        assert_eq!(secret["metadata"]["labels"]["heritage"], "deis");
        let data = secret_data(secret);
        assert_eq!(data["hostname"], host);
        assert_eq!(
            (
                data["organization"].as_str(),
                data["username"].as_str(),
                data["password"].as_str()
            ),
            ("myorg", "myusername", "mypassword")
        );
    }
}

#[test]
fn ecr_example_renders_secret_refresher_and_least_privilege_rbac() {
    let objects = render(Some("examples/ecr.yaml"), &[]);
    let data = secret_data(find(&objects, "Secret", "registry-secret"));
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["accesskey", "hostname", "region", "registryid", "secretkey"]
    );
    assert_eq!(
        (
            data["accesskey"].as_str(),
            data["region"].as_str(),
            data["hostname"].as_str()
        ),
        ("ACCESS_KEY", "us-west-2", "")
    );
    assert!(objects.iter().all(|o| o["kind"] != "DaemonSet"));
    let d = find(&objects, "Deployment", "deis-registry-token-refresher");
    assert_eq!(container(d)["args"][0], "token-refresher");
    assert_eq!(env(d, "DEIS_REGISTRY_LOCATION").as_deref(), Some("ecr"));
    assert_eq!(
        env(d, "DEIS_REGISTRY_SECRET_PREFIX").as_deref(),
        Some("private-registry")
    );
    assert_eq!(env(d, "DEIS_TOKEN_REFRESH_TIME").as_deref(), Some(""));
    assert_eq!(env(d, "POD_NAME").as_deref(), Some("<valueFrom>"));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "deis-registry-token-refresher");
    assert_eq!(container(d)["volumeMounts"][0]["mountPath"], CREDS);
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "registry-secret");
    assert_eq!(container(d)["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container(d)["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_hardened(d);
    // RBAC: read namespaces, write only the one secret name, leases in the release namespace.
    let role = find(
        &objects,
        "ClusterRole",
        "deis:deis-registry-token-refresher",
    );
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules[0]["resources"][0], "namespaces");
    assert_eq!(
        rules[0]["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
    assert_eq!(rules[1]["resources"][0], "secrets");
    assert_eq!(
        rules[1]["resourceNames"],
        serde_json::json!(["private-registry-ecr"])
    );
    assert!(
        !rules[1]["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "delete" || v == "*")
    );
    let binding = find(
        &objects,
        "ClusterRoleBinding",
        "deis:deis-registry-token-refresher",
    );
    assert_eq!(
        binding["subjects"][0]["name"],
        "deis-registry-token-refresher"
    );
    assert_eq!(binding["subjects"][0]["namespace"], "deis");
    let leases = find(&objects, "Role", "deis-registry-token-refresher");
    assert_eq!(leases["rules"][0]["resources"][0], "leases");
    find(&objects, "RoleBinding", "deis-registry-token-refresher");
}

#[test]
fn gcr_example_keeps_key_json_as_given() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/examples/gcr.yaml"
    ))
    .unwrap();
    let objects = render(Some("examples/gcr.yaml"), &[]);
    let secret = find(&objects, "Secret", "registry-secret");
    // Already base64 in values: the secret's data is that text, not encoded again.
    let given = secret["data"]["key.json"].as_str().unwrap();
    assert!(example.contains(given));
    let key: Value = serde_json::from_str(&secret_data(secret)["key.json"]).unwrap();
    assert_eq!(key["project_id"], "my-project");
    let d = find(&objects, "Deployment", "deis-registry-token-refresher");
    assert_eq!(env(d, "DEIS_REGISTRY_LOCATION").as_deref(), Some("gcr"));
    let role = find(
        &objects,
        "ClusterRole",
        "deis:deis-registry-token-refresher",
    );
    assert_eq!(
        role["rules"][1]["resourceNames"],
        serde_json::json!(["private-registry-gcr"])
    );
}

#[test]
fn on_cluster_renders_registry_and_proxy() {
    let objects = render(None, &[]);
    assert_eq!(
        kinds(&objects),
        [
            "DaemonSet/deis-registry-proxy",
            "Deployment/deis-registry",
            "NetworkPolicy/deis-registry",
            "Pod/deis-registry-check",
            "Secret/deis-registry-auth",
            "Secret/deis-registry-pull",
            "Secret/deis-registry-push",
            "Service/deis-registry",
            "ServiceAccount/deis-registry"
        ]
    );
    let svc = find(&objects, "Service", "deis-registry");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    let reg = find(&objects, "Deployment", "deis-registry");
    assert_eq!(container(reg)["args"][0], "registry");
    assert_eq!(container(reg)["ports"][0]["containerPort"], 5000);
    assert_eq!(env(reg, "QUAYSIDE_LISTEN").as_deref(), Some("0.0.0.0:5000"));
    assert_eq!(env(reg, "REGISTRY_STORAGE").as_deref(), Some("filesystem"));
    // Not /v2/: it answers 401 once access control is on, and a storage outage must not
    // restart the registry (liveness), only take it out of the Service (readiness).
    assert_eq!(
        container(reg)["livenessProbe"]["httpGet"]["path"],
        "/healthz"
    );
    assert_eq!(
        container(reg)["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    assert_hardened(reg);
    let proxy = find(&objects, "DaemonSet", "deis-registry-proxy");
    assert_eq!(container(proxy)["args"][0], "proxy");
    assert_eq!(container(proxy)["ports"][0]["hostPort"], 5555);
    assert_eq!(env(proxy, "BIND_ADDR").as_deref(), Some("0.0.0.0:5555"));
    assert_eq!(
        env(proxy, "REGISTRY_HOST").as_deref(),
        Some("$(DEIS_REGISTRY_SERVICE_HOST)")
    );
    assert_hardened(proxy);

    let cni = render(None, &["global.use_cni=true"]);
    let proxy = find(&cni, "DaemonSet", "deis-registry-proxy");
    assert_eq!(proxy["spec"]["template"]["spec"]["hostNetwork"], true);
    assert_eq!(env(proxy, "BIND_ADDR").as_deref(), Some("127.0.0.1:5555"));
    assert!(container(proxy)["ports"].is_null());
    let pvc = render(None, &["registry.persistence.enabled=true"]);
    find(&pvc, "PersistentVolumeClaim", "deis-registry-data");
    assert_eq!(env(reg, "QUAYSIDE_GC_INTERVAL").as_deref(), Some("24h"));
    let cron = render(
        None,
        &[
            "global.storage=s3",
            "s3.registry_bucket=images",
            "registry.gc.cronjob_schedule=0 3 * * *",
        ],
    );
    let job = find(&cron, "CronJob", "deis-registry-gc");
    assert_eq!(container(job)["args"][0], "gc");
    assert_eq!(env(job, "REGISTRY_STORAGE").as_deref(), Some("s3"));
    assert_hardened(job);
}

/// The rendered manifest as text, for what must not appear in it.
fn rendered_text(sets: &[&str]) -> String {
    let out = helm(&template_args(None, sets));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn the_default_install_closes_the_registry_to_all_but_its_identities() {
    let text = rendered_text(&[]);
    let objects = testkit::chart::parse(&text);
    let reg = find(&objects, "Deployment", "deis-registry");
    assert_eq!(env(reg, "QUAYSIDE_AUTH").as_deref(), Some("htpasswd"));
    let auth_dir = "/var/run/secrets/quayside/auth";
    assert_eq!(
        env(reg, "QUAYSIDE_AUTH_HTPASSWD"),
        Some(format!("{auth_dir}/htpasswd"))
    );
    assert_eq!(
        env(reg, "QUAYSIDE_AUTH_POLICY"),
        Some(format!("{auth_dir}/policy.yaml"))
    );
    let mount = container(reg)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == auth_dir)
        .expect("the auth Secret is mounted");
    let volume = pod(reg)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "deis-registry-auth");

    let auth = secret_data(find(&objects, "Secret", "deis-registry-auth"));
    let policy = &auth["policy.yaml"];
    assert!(
        policy.contains("users: [builder]") && policy.contains("actions: [pull, push]"),
        "{policy}"
    );
    assert!(
        policy.contains("users: [node-proxy]") && policy.contains("actions: [pull]\n"),
        "{policy}"
    );
    assert!(
        !policy.contains("delete") && !policy.contains("anonymous"),
        "{policy}"
    );
    let users: Vec<&str> = auth["htpasswd"]
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(users.contains(&"builder") && users.contains(&"node-proxy"));
    assert!(
        auth["htpasswd"].lines().all(|l| l.contains(":$2a$")),
        "bcrypt only"
    );

    let mut passwords = Vec::new();
    for (name, user) in [
        ("deis-registry-push", "builder"),
        ("deis-registry-pull", "node-proxy"),
    ] {
        let secret = find(&objects, "Secret", name);
        assert_eq!(secret["type"], "kubernetes.io/basic-auth");
        let data = secret_data(secret);
        assert_eq!(data["username"], user);
        assert!(data["password"].len() >= 32, "a strong generated password");
        passwords.push(data["password"].clone());
    }
    assert_ne!(passwords[0], passwords[1]);
    // Each credential appears once, base64 in its own Secret: never in plain text, never twice.
    for password in &passwords {
        assert!(
            !text.contains(password.as_str()),
            "a password in plain text"
        );
        assert_eq!(text.matches(&b64(password)).count(), 1);
    }
    assert!(!text.contains("kind: ConfigMap"));

    // The proxy lends the pull identity, read from its Secret; both pods roll when it changes.
    let proxy = find(&objects, "DaemonSet", "deis-registry-proxy");
    for (var, key) in [
        ("QUAYSIDE_PROXY_USERNAME", "username"),
        ("QUAYSIDE_PROXY_PASSWORD", "password"),
    ] {
        let e = container(proxy)["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .unwrap();
        assert!(e["value"].is_null());
        assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "deis-registry-pull");
        assert_eq!(e["valueFrom"]["secretKeyRef"]["key"], key);
    }
    assert_eq!(
        env(proxy, "QUAYSIDE_PROXY_READ_ONLY").as_deref(),
        Some("false")
    );
    let checksum = testkit::sha256(auth["htpasswd"].as_bytes());
    let checksum = checksum.strip_prefix("sha256:").unwrap_or(&checksum);
    for workload in [reg, proxy] {
        assert_eq!(
            workload["spec"]["template"]["metadata"]["annotations"]["checksum/htpasswd"],
            checksum
        );
    }

    let np = find(&objects, "NetworkPolicy", "deis-registry");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app"],
        "deis-registry"
    );
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let from: Vec<&Value> = np["spec"]["ingress"][0]["from"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let apps: Vec<&str> = from
        .iter()
        .map(|p| p["podSelector"]["matchLabels"]["app"].as_str().unwrap())
        .collect();
    assert_eq!(
        apps,
        [
            "deis-registry-proxy",
            "deis-registry-check",
            "deis-registry",
            "deis-builder",
            "deis-controller"
        ]
    );
    assert_eq!(np["spec"]["ingress"].as_array().unwrap().len(), 1);

    let custom = render(
        None,
        &[
            "registry.network_policy.client_pod_labels[0].role=ci",
            "registry.network_policy.extra_from[0].ipBlock.cidr=10.0.0.0/16",
        ],
    );
    let from = &find(&custom, "NetworkPolicy", "deis-registry")["spec"]["ingress"][0]["from"];
    assert_eq!(
        from[3]["podSelector"]["matchLabels"],
        serde_json::json!({"role": "ci"})
    );
    assert_eq!(from[4]["ipBlock"]["cidr"], "10.0.0.0/16");
    // Secrets made by the operator (renderers without cluster access): referenced, not rendered.
    let external = render(None, &["registry.create_identity_secrets=false"]);
    assert!(!kinds(&external).iter().any(|k| k.starts_with("Secret/")));
    let reg = find(&external, "Deployment", "deis-registry");
    assert_eq!(env(reg, "QUAYSIDE_AUTH").as_deref(), Some("htpasswd"));
    assert!(
        pod(reg)["volumes"]
            .to_string()
            .contains("deis-registry-auth")
    );
    let proxy = find(&external, "DaemonSet", "deis-registry-proxy");
    assert!(
        container(proxy)["env"]
            .to_string()
            .contains("deis-registry-pull")
    );

    let none = render(None, &["registry.network_policy.enabled=false"]);
    assert!(!kinds(&none).iter().any(|k| k.starts_with("NetworkPolicy/")));
}

/// `helm install --dry-run=client`'s output (its NOTES).
fn install_notes(example: Option<&str>, sets: &[&str]) -> String {
    let mut args = vec![
        "install",
        "quayside",
        "quayside",
        "--dry-run=client",
        "--namespace",
        "deis",
    ];
    if let Some(e) = example {
        args.extend(["-f", e]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn insecure_anonymous_push_restores_workflows_open_registry_and_warns() {
    let objects = render(None, &["registry.insecure_anonymous_push=true"]);
    let names = kinds(&objects);
    assert!(!names.iter().any(|k| k.starts_with("Secret/")), "{names:?}");
    let reg = find(&objects, "Deployment", "deis-registry");
    assert_eq!(env(reg, "QUAYSIDE_AUTH").as_deref(), Some("none"));
    assert!(env(reg, "QUAYSIDE_AUTH_HTPASSWD").is_none());
    let proxy = find(&objects, "DaemonSet", "deis-registry-proxy");
    assert!(env(proxy, "QUAYSIDE_PROXY_USERNAME").is_none());
    assert_eq!(
        env(proxy, "QUAYSIDE_PROXY_READ_ONLY").as_deref(),
        Some("false")
    );

    let open = install_notes(None, &["registry.insecure_anonymous_push=true"]);
    assert!(
        open.contains(
            "WARNING: registry.insecure_anonymous_push=true: the registry has no access control"
        ),
        "{open}"
    );
    let closed = install_notes(None, &[]);
    assert!(!closed.contains("insecure_anonymous_push"), "{closed}");
    assert!(closed.contains("deis-registry-push"), "{closed}");
    let cni = install_notes(None, &["global.use_cni=true"]);
    assert!(cni.contains("registry.network_policy.extra_from"), "{cni}");
    let refused = refused(None, &["registry.insecure_anonymous_push=yes"]);
    assert!(refused.contains("insecure_anonymous_push"), "{refused}");
}

/// `helm template --dry-run=server` against the fake API server: the chart's `lookup`s see
/// the Secrets it holds.
fn render_against(kube: &testkit::kube::FakeKube, dir: &std::path::Path) -> Vec<Value> {
    let kubeconfig = kube.write_kubeconfig(dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let mut args = template_args(None, &[]);
    // The fake serves no OpenAPI documents to validate against; objects are checked elsewhere.
    args.extend([
        "--dry-run=server",
        "--disable-openapi-validation",
        "--kubeconfig",
        kubeconfig,
    ]);
    testkit::chart::render_with(&args)
}

fn identities(objects: &[Value]) -> (String, String, String) {
    let password = |name| secret_data(find(objects, "Secret", name))["password"].clone();
    let htpasswd = secret_data(find(objects, "Secret", "deis-registry-auth"))["htpasswd"].clone();
    (
        password("deis-registry-push"),
        password("deis-registry-pull"),
        htpasswd,
    )
}

#[test]
fn generated_credentials_survive_upgrades_and_rotate_when_a_secret_is_deleted() {
    // Without a cluster every render generates new ones: lookup is what keeps them.
    assert_ne!(
        identities(&render(None, &[])).0,
        identities(&render(None, &[])).0
    );

    let kube = testkit::kube::FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let install = render_against(&kube, dir.path());
    // As `helm install` would have stored them: with the release's ownership annotations,
    // without which helm refuses to adopt existing objects.
    for name in [
        "deis-registry-push",
        "deis-registry-pull",
        "deis-registry-auth",
    ] {
        let mut secret = find(&install, "Secret", name).clone();
        let annotations = &mut secret["metadata"]["annotations"];
        annotations["meta.helm.sh/release-name"] = "quayside".into();
        annotations["meta.helm.sh/release-namespace"] = "deis".into();
        kube.create_secret("deis", secret);
    }
    let first = identities(&install);
    let upgrade = render_against(&kube, dir.path());
    assert_eq!(
        identities(&upgrade),
        first,
        "an upgrade keeps passwords and htpasswd"
    );
    let annotation = |objects: &[Value]| {
        find(objects, "Deployment", "deis-registry")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/htpasswd"]
            .clone()
    };
    assert_eq!(
        annotation(&upgrade),
        annotation(&install),
        "no rollout on upgrade"
    );
    assert!(kube.requests("GET", "/api/v1/namespaces/deis/secrets/deis-registry-push") >= 2);

    // Rotation: delete the pull Secret and upgrade.
    assert!(kube.delete("secrets", "deis", "deis-registry-pull"));
    let rotated = identities(&render_against(&kube, dir.path()));
    assert_eq!(rotated.0, first.0, "the push password stays");
    assert_ne!(rotated.1, first.1, "the pull password is new");
    assert_ne!(rotated.2, first.2, "htpasswd follows");
}

#[test]
fn on_cluster_object_storage_wires_the_keyfile() {
    let gcs_key =
        base64::engine::general_purpose::STANDARD.encode(r#"{"project_id":"p","private_key":"k"}"#);
    let gcs_set = format!("gcs.key_json={gcs_key}");
    let cases: [(&str, Vec<&str>, &[&str]); 4] = [
        (
            "s3",
            vec![
                "s3.accesskey=AK",
                "s3.secretkey=SK",
                "s3.registry_bucket=images",
            ],
            &[
                "accesskey",
                "builder-bucket",
                "database-bucket",
                "region",
                "registry-bucket",
                "secretkey",
            ],
        ),
        (
            "gcs",
            vec![gcs_set.as_str(), "gcs.registry_bucket=images"],
            &[
                "builder-bucket",
                "database-bucket",
                "key.json",
                "registry-bucket",
            ],
        ),
        (
            "azure",
            vec![
                "azure.accountname=acct",
                "azure.accountkey=a2V5",
                "azure.registry_container=images",
            ],
            &[
                "accountkey",
                "accountname",
                "builder-container",
                "database-container",
                "registry-container",
            ],
        ),
        ("minio", vec![], &["accesskey", "secretkey"]),
    ];
    for (storage, extra, keys) in cases {
        let set = format!("global.storage={storage}");
        let mut sets = vec![set.as_str()];
        sets.extend(extra);
        let objects = render(None, &sets);
        let secret = find(&objects, "Secret", "objectstorage-keyfile");
        assert_eq!(
            secret["metadata"]["annotations"]["deis.io/objectstorage"],
            storage
        );
        let data = secret_data(secret);
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            keys,
            "{storage}"
        );
        let reg = find(&objects, "Deployment", "deis-registry");
        assert_eq!(env(reg, "REGISTRY_STORAGE").as_deref(), Some(storage));
        let mounts = container(reg)["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["mountPath"] == CREDS), "{storage}");
    }
    let objects = render(
        None,
        &["global.storage=s3", "registry.create_storage_secret=false"],
    );
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["name"] != "objectstorage-keyfile")
    );
}

#[test]
fn bad_values_are_refused_with_the_key_and_the_fix() {
    let e = refused(None, &["global.registry_location=quay"]);
    assert!(
        e.contains("/global/registry_location")
            && e.contains("'on-cluster', 'off-cluster', 'ecr', 'gcr'"),
        "{e}"
    );
    let e = refused(
        Some("examples/ecr.yaml"),
        &["registry-token-refresher.ecr.region="],
    );
    assert!(
        e.contains("registry-token-refresher.ecr.region is empty: ECR needs the region"),
        "{e}"
    );
    let not_json = base64::engine::general_purpose::STANDARD.encode("not json");
    let e = refused(
        Some("examples/gcr.yaml"),
        &[&format!("registry-token-refresher.gcr.key_json={not_json}")],
    );
    assert!(e.contains("is not the base64 of a service-account JSON key: encode the key file with base64 -w0 key.json"), "{e}");
    let e = refused(
        Some("examples/gcr.yaml"),
        &["registry-token-refresher.gcr.key_json=not base64!"],
    );
    assert!(
        e.contains("/registry-token-refresher/gcr/key_json")
            && e.contains("does not match pattern"),
        "{e}"
    );
    let e = refused(
        Some("examples/acr.yaml"),
        &["registry-token-refresher.off_cluster_registry.organization="],
    );
    assert!(
        e.contains(
            "organization is empty: off-cluster images are named <hostname>/<organization>/<app>"
        ),
        "{e}"
    );
    let e = refused(None, &["registry.gc.cronjob_schedule=0 3 * * *"]);
    assert!(
        e.contains("registry.gc.cronjob_schedule needs object storage"),
        "{e}"
    );
    let e = refused(None, &["global.storage=swift"]);
    assert!(e.contains("swift is not supported"), "{e}");

    // Misspellings: Quayside's own sections refuse unknown keys; in global, which Workflow's
    // other charts share, near-misses of Quayside's keys fail and the rest pass.
    let e = refused(None, &["global.registry_locaton=ecr"]);
    assert!(e.contains("global.registry_locaton is not a key this chart knows (a misspelling?): Quayside reads global.registry_location"), "{e}");
    for (set, at) in [
        (
            "registry.gc.intervall=1h",
            "at '/registry/gc': additional properties 'intervall'",
        ),
        (
            "registry-proxy.readonly=true",
            "at '/registry-proxy': additional properties 'readonly'",
        ),
        (
            "registry-token-refresher.ecr.regoin=x",
            "at '/registry-token-refresher/ecr': additional properties 'regoin'",
        ),
    ] {
        let e = refused(None, &[set]);
        assert!(e.contains(at), "{set}: {e}");
    }
    let passes = render(
        None,
        &[
            "global.database_location=off-cluster",
            "controller.app_pull_policy=Always",
        ],
    );
    find(&passes, "Deployment", "deis-registry");

    // Artifact Registry needs the repository segment of its image names.
    let e = refused(
        Some("examples/gcr.yaml"),
        &["registry-token-refresher.gcr.hostname=us-west1-docker.pkg.dev"],
    );
    assert!(e.contains("registry-token-refresher.gcr.repository is empty: Artifact Registry (us-west1-docker.pkg.dev) names images <host>/<project>/<repository>/<app>"), "{e}");
    let ar = render(
        Some("examples/gcr.yaml"),
        &[
            "registry-token-refresher.gcr.hostname=us-west1-docker.pkg.dev",
            "registry-token-refresher.gcr.repository=apps",
        ],
    );
    assert_eq!(
        secret_data(find(&ar, "Secret", "registry-secret"))["repository"],
        "apps"
    );

    // Object storage with the values file's placeholders, or without the keys it needs.
    let e = refused(None, &["global.storage=s3"]);
    assert!(e.contains(r#"s3.registry_bucket is "your-registry-bucket-name": with global.storage=s3 set it to your bucket's name"#), "{e}");
    let e = refused(
        None,
        &[
            "global.storage=azure",
            "azure.accountname=a",
            "azure.accountkey=k",
        ],
    );
    assert!(
        e.contains(r#"azure.registry_container is "your-registry-container-name""#),
        "{e}"
    );
    let e = refused(
        None,
        &["global.storage=azure", "azure.registry_container=c"],
    );
    assert!(
        e.contains("azure.accountname and azure.accountkey must both be set"),
        "{e}"
    );
    let e = refused(None, &["global.storage=gcs", "gcs.registry_bucket=b"]);
    assert!(
        e.contains("gcs.key_json is empty: with global.storage=gcs"),
        "{e}"
    );
    // Keys left empty on S3 mean the pod's IAM role; a secret made elsewhere is not checked.
    render(None, &["global.storage=s3", "s3.registry_bucket=b"]);
    render(
        None,
        &["global.storage=s3", "registry.create_storage_secret=false"],
    );
}

/// Every value the chart takes is in its README's table (full path, or `parent.first`, `.leaf`
/// on one row).
#[test]
fn the_chart_readme_documents_every_value() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/quayside/README.md"
    ))
    .unwrap();
    let values: Value = chart_values();
    let mut leaves = Vec::new();
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    walk("", &values, &mut leaves);
    assert!(leaves.len() > 60, "{}", leaves.len());
    for leaf in leaves {
        let (parent, name) = leaf.rsplit_once('.').unwrap();
        let documented = readme.lines().any(|line| {
            line.starts_with('|')
                && (line.contains(&format!("`{leaf}`"))
                    || (line.contains(&format!("`{parent}."))
                        && line.contains(&format!("`.{name}`"))))
        });
        assert!(documented, "{leaf} is not in charts/quayside/README.md");
    }
}

fn chart_values() -> Value {
    let out = helm(&["show", "values", "quayside"]);
    assert!(out.status.success());
    testkit::chart::parse(&String::from_utf8(out.stdout).unwrap()).remove(0)
}

#[test]
fn notes_warn_about_ecr_registryid_and_hostname() {
    let install = |sets: &[&str]| install_notes(Some("examples/ecr.yaml"), sets);
    assert!(!install(&[]).contains("WARNING"));
    let notes = install(&["registry-token-refresher.ecr.registryid=123456789012"]);
    assert!(
        notes.contains("WARNING: registry-token-refresher.ecr.registryid / .hostname are set"),
        "{notes}"
    );
}

/// Env var names a subcommand reads and the paths it defaults to, from its `--help`.
fn reads(subcommand: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(BIN)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let grab = |marker: &str, stop: &[char]| -> BTreeSet<String> {
        help.split(marker)
            .skip(1)
            .map(|rest| rest.split(stop).next().unwrap().to_owned())
            .collect()
    };
    (grab("[env: ", &['=', ']']), grab("[default: ", &[']']))
}

#[test]
fn every_env_var_and_mount_the_chart_sets_is_read_by_the_binary() {
    let gcs_key =
        base64::engine::general_purpose::STANDARD.encode(r#"{"project_id":"p","private_key":"k"}"#);
    let gcs_set = format!("gcs.key_json={gcs_key}");
    let renders = [
        render(None, &[]),
        render(
            None,
            &["global.use_cni=true", "registry.persistence.enabled=true"],
        ),
        render(None, &["global.storage=s3", "s3.registry_bucket=b"]),
        render(
            None,
            &["global.storage=gcs", &gcs_set, "gcs.registry_bucket=b"],
        ),
        render(
            None,
            &[
                "global.storage=azure",
                "azure.accountname=a",
                "azure.accountkey=k",
                "azure.registry_container=c",
            ],
        ),
        render(
            None,
            &[
                "global.storage=minio",
                "registry.gc.cronjob_schedule=0 3 * * *",
            ],
        ),
        render(Some("examples/ecr.yaml"), &[]),
        render(Some("examples/gcr.yaml"), &[]),
        render(
            None,
            &[
                "registry.mirror.upstreams[0]=docker.io=https://registry-1.docker.io",
                "registry.mirror.cache_max_age=720h",
                "registry.mirror.credentials.docker\\.io=dockerhub-login",
                "registry.mirror.upstreams[1]=1.dkr.ecr.us-east-1.amazonaws.com=https://1.dkr.ecr.us-east-1.amazonaws.com",
                "registry.mirror.credentials.1\\.dkr\\.ecr\\.us-east-1\\.amazonaws\\.com=ecr:ecr-pull",
            ],
        ),
    ];
    let mut checked = 0;
    for objects in &renders {
        for workload in objects.iter().filter(|o| {
            ["Deployment", "DaemonSet", "CronJob", "Pod"]
                .contains(&o["kind"].as_str().unwrap_or(""))
        }) {
            let c = container(workload);
            let subcommand = c["args"][0].as_str().unwrap();
            let (env_names, defaults) = reads(subcommand);
            assert!(
                !env_names.is_empty(),
                "{subcommand} --help lists no env vars"
            );
            let mut values = BTreeSet::new();
            let all_env = c["env"].to_string();
            for e in c["env"].as_array().unwrap() {
                let name = e["name"].as_str().unwrap();
                // Or only an input of another variable (`$(HOST_IP)`), as the kubelet expands.
                let expanded = all_env.contains(&format!("$({name})"));
                assert!(
                    env_names.contains(name) || expanded,
                    "the chart sets {name} for `quayside {subcommand}`, which does not read it"
                );
                values.insert(e["value"].as_str().unwrap_or("").to_owned());
                checked += 1;
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let path = m["mountPath"].as_str().unwrap().to_owned();
                // A value may name it, lead to a file in it, or list it (`HOST=DIR,...`).
                let named = values.iter().any(|v| {
                    v == &path
                        || v.starts_with(&format!("{path}/"))
                        || v.split(',').any(|e| {
                            e.ends_with(&format!("={path}")) || e.ends_with(&format!("=ecr:{path}"))
                        })
                });
                assert!(
                    named || defaults.contains(&path),
                    "`quayside {subcommand}` is neither told about nor defaults to the mount {path}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} settings checked");
}
