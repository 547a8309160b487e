//! The Helm chart through the real `helm` binary (the test command installs it and names it in
//! `QUAYSIDE_TEST_HELM`), and its rendered workloads turned into processes: a container's env
//! with `secretKeyRef`s resolved from the rendered Secrets, `$(VAR)` references expanded, and
//! every volume a directory of a temporary tree (Secret volumes holding the Secret's files), so a
//! test runs the binary exactly as the chart configures it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;

fn charts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts")
}

/// `helm <args>` run in `charts/`.
pub fn helm(args: &[&str]) -> Output {
    let helm = std::env::var("QUAYSIDE_TEST_HELM").unwrap_or_else(|_| {
        panic!(
            "QUAYSIDE_TEST_HELM is not set: run the tests with scripts/test.sh, which installs helm"
        )
    });
    Command::new(helm)
        .args(args)
        .current_dir(charts_dir())
        .output()
        .expect("run helm")
}

/// `helm template quayside quayside --namespace deis [-f example] [--set s]... [extra]...`.
pub fn template_args<'a>(example: Option<&'a str>, sets: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["template", "quayside", "quayside", "--namespace", "deis"];
    if let Some(e) = example {
        args.extend(["-f", e]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    args
}

/// The objects `helm template` renders with an example file and `--set`s.
pub fn render(example: Option<&str>, sets: &[&str]) -> Vec<Value> {
    render_with(&template_args(example, sets))
}

/// The objects `helm <args>` prints (a `template` command).
pub fn render_with(args: &[&str]) -> Vec<Value> {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).expect("helm prints UTF-8"))
}

pub fn parse(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Option<Value>>(text)
        .expect("helm prints YAML")
        .into_iter()
        .flatten()
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A Secret's data, decoded.
pub fn secret_data(secret: &Value) -> BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .expect("Secret data")
        .iter()
        .map(|(k, v)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 string"))
                .expect("base64");
            (k.clone(), String::from_utf8(raw).expect("UTF-8 secret"))
        })
        .collect()
}

pub fn pod(workload: &Value) -> &Value {
    match workload["kind"].as_str() {
        Some("Pod") => &workload["spec"],
        Some("CronJob") => &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

pub fn container(workload: &Value) -> &Value {
    &pod(workload)["containers"][0]
}

/// A rendered workload's first container, ready to run as a process.
pub struct Container {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where each volume's mountPath lives on this machine.
    pub mounts: BTreeMap<String, PathBuf>,
    _root: TempDir,
}

/// What the cluster would supply around a container.
#[derive(Default)]
pub struct Node<'a> {
    /// The Service links the kubelet sets (`DEIS_REGISTRY_SERVICE_HOST`, …).
    pub service_env: &'a [(&'a str, &'a str)],
    /// Env values replaced after expansion (loopback listen addresses).
    pub overrides: &'a [(&'a str, &'a str)],
    /// Volumes backed by a given directory (a persistent volume that outlives the pod).
    pub volumes: &'a [(&'a str, &'a Path)],
}

impl Container {
    /// `workload` as the kubelet would start it from `objects` on `node`.
    pub fn from_rendered(objects: &[Value], workload: &Value, node: &Node) -> Container {
        let root = tempfile::tempdir().expect("tempdir");
        let mounts = materialize_volumes(objects, workload, root.path(), node.volumes);
        let c = container(workload);
        let mut known: BTreeMap<String, String> = node
            .service_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = Vec::new();
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = match e["value"].as_str() {
                Some(v) => expand(v, &known),
                None if e["valueFrom"]["fieldRef"].is_object() => {
                    field_ref(workload, &e["valueFrom"]["fieldRef"])
                }
                None => secret_key_ref(objects, &e["valueFrom"]["secretKeyRef"]),
            };
            let value = map_paths(&value, &mounts);
            known.insert(name.clone(), value.clone());
            env.push((name, value));
        }
        for (name, value) in node.overrides {
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), value.to_string()));
        }
        let args = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().expect("arg").to_owned())
            .collect();
        Container {
            args,
            env,
            mounts,
            _root: root,
        }
    }

    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The process, waiting for its JSON `ready_message` log line.
    pub fn spawn(&self, bin: &str, ready_message: &str) -> crate::process::Quayside {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        crate::process::Quayside::spawn_env(bin, &self.args, &env, ready_message)
    }
}

/// One directory per volume under `root`; a Secret volume holds one file per key, as the
/// kubelet writes it. Returns mountPath → directory.
fn materialize_volumes(
    objects: &[Value],
    workload: &Value,
    root: &Path,
    bound: &[(&str, &Path)],
) -> BTreeMap<String, PathBuf> {
    let mut dirs = BTreeMap::new();
    for v in pod(workload)["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().expect("volume name");
        let dir = match bound.iter().find(|(n, _)| *n == name) {
            Some((_, path)) => path.to_path_buf(),
            None => root.join(name),
        };
        std::fs::create_dir_all(&dir).expect("volume dir");
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            for (key, value) in secret_data(find(objects, "Secret", secret)) {
                std::fs::write(dir.join(key), value).expect("secret file");
            }
        }
        dirs.insert(name.to_owned(), dir);
    }
    let mut mounts = BTreeMap::new();
    for m in container(workload)["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let volume = m["name"].as_str().expect("mount name");
        let dir = dirs
            .get(volume)
            .unwrap_or_else(|| panic!("mount of undeclared volume {volume}"));
        mounts.insert(
            m["mountPath"].as_str().expect("mountPath").to_owned(),
            dir.clone(),
        );
    }
    mounts
}

/// The downward API as the kubelet fills it for a pod of `workload` in namespace `deis` (where
/// [`template_args`] renders) on a node whose address is loopback.
fn field_ref(workload: &Value, reference: &Value) -> String {
    match reference["fieldPath"].as_str() {
        Some("metadata.namespace") => "deis".to_owned(),
        Some("metadata.name") => format!(
            "{}-0",
            workload["metadata"]["name"].as_str().unwrap_or("pod")
        ),
        Some("status.hostIP") => "127.0.0.1".to_owned(),
        other => panic!("fieldRef {other:?} is not filled in here"),
    }
}

fn secret_key_ref(objects: &[Value], reference: &Value) -> String {
    let name = reference["name"].as_str().expect("secretKeyRef name");
    let key = reference["key"].as_str().expect("secretKeyRef key");
    secret_data(find(objects, "Secret", name))
        .remove(key)
        .unwrap_or_else(|| panic!("Secret {name} has no key {key}"))
}

/// Kubernetes' `$(VAR)` expansion: a known variable is replaced, an unknown one kept as written.
fn expand(value: &str, known: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if known.contains_key(&after[..end]) => {
                out.push_str(&known[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// An env value naming a mounted path names the volume's directory here instead.
fn map_paths(value: &str, mounts: &BTreeMap<String, PathBuf>) -> String {
    for (mount, dir) in mounts {
        if let Some(rest) = value.strip_prefix(mount.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_owned()
}
