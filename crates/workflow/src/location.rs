//! Where app images live, from Workflow's inputs: `DEIS_REGISTRY_LOCATION` (on-cluster |
//! off-cluster | ecr | gcr) and the `registry-secret` Workflow mounts at
//! `/var/run/secrets/deis/registry/creds/` (keys per location in deis-registry-spec §2.3). Every
//! problem is reported at once, naming the file and the fix.

use images::location::{Ecr, Gcr, Location, OffCluster};
use secrets::{Secret, SecretDir};

/// Reads the location `name` (from `DEIS_REGISTRY_LOCATION`) and, for off-cluster
/// registries, the mounted `registry-secret`.
pub fn load(name: &str, secret: &SecretDir, host_port: u16) -> Result<Location, Vec<String>> {
    load_from(name, "DEIS_REGISTRY_LOCATION", secret, host_port)
}

/// [`load`] with messages naming `origin`, where the name came from (a flag, an
/// env var).
pub fn load_from(
    name: &str,
    origin: &str,
    secret: &SecretDir,
    host_port: u16,
) -> Result<Location, Vec<String>> {
    let mut errors = Vec::new();
    let mut required = |key: &str, why: &str| -> String {
        match secret.get(key).map(|v| v.trim_end().to_owned()) {
            Some(v) if !v.is_empty() => v,
            found => {
                let state = if found.is_some() {
                    "is empty"
                } else {
                    "does not exist"
                };
                errors.push(format!(
                    "{origin}={name}: {} {state}: {why} (set it in the registry-secret, \
                     registry-token-refresher.* in the chart's values)",
                    secret.path(key).display()
                ));
                String::new()
            }
        }
    };
    let optional = |key: &str| {
        secret
            .get(key)
            .map(|v| v.trim_end().to_owned())
            .filter(|v| !v.is_empty())
    };
    let location = match name.trim() {
        "" | "on-cluster" => Location::OnCluster { host_port },
        "off-cluster" => Location::OffCluster(OffCluster {
            hostname: optional("hostname").unwrap_or_default(),
            organization: required(
                "organization",
                "images are named <hostname>/<organization>/<app>",
            ),
            username: required("username", "the registry's username"),
            password: Secret::new(required("password", "the registry's password")),
        }),
        "ecr" => Location::Ecr(Ecr {
            access_key: optional("accesskey").map(Secret::new),
            secret_key: optional("secretkey").map(Secret::new),
            region: required("region", "ECR needs a region"),
            registry_id: optional("registryid"),
            hostname: optional("hostname"),
        }),
        "gcr" => {
            let key_json = required("key.json", "GCR needs a service-account key");
            let project_id = if key_json.is_empty() {
                String::new()
            } else {
                match serde_json::from_str::<serde_json::Value>(&key_json)
                    .ok()
                    .and_then(|v| v["project_id"].as_str().map(str::to_owned))
                {
                    Some(p) => p,
                    None => {
                        errors.push(format!(
                            "{origin}=gcr: {} is not a service-account key with a project_id",
                            secret.path("key.json").display()
                        ));
                        String::new()
                    }
                }
            };
            Location::Gcr(Gcr {
                key_json: Secret::new(key_json),
                project_id,
                hostname: optional("hostname"),
                repository: optional("repository"),
            })
        }
        other => {
            return Err(vec![format!(
                "{origin}={other:?}: use on-cluster, off-cluster, ecr or gcr"
            )]);
        }
    };
    if errors.is_empty() {
        Ok(location)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> (tempfile::TempDir, SecretDir) {
        let d = tempfile::tempdir().unwrap();
        for (k, v) in files {
            std::fs::write(d.path().join(k), v).unwrap();
        }
        let s = SecretDir::new(d.path());
        (d, s)
    }

    #[test]
    fn each_location() {
        let (_d, s) = dir(&[]);
        assert_eq!(
            load("on-cluster", &s, 5555),
            Ok(Location::OnCluster { host_port: 5555 })
        );
        let (_d, s) = dir(&[
            ("hostname", ""),
            ("organization", "myorg"),
            ("username", "u"),
            ("password", "p\n"),
        ]);
        let Ok(Location::OffCluster(o)) = load("off-cluster", &s, 5555) else {
            panic!()
        };
        assert_eq!(
            (
                o.hostname.as_str(),
                o.organization.as_str(),
                o.password.expose()
            ),
            ("", "myorg", "p")
        );
        let (_d, s) = dir(&[
            ("accesskey", ""),
            ("secretkey", ""),
            ("region", "us-west-2"),
            ("registryid", ""),
            ("hostname", ""),
        ]);
        let Ok(Location::Ecr(e)) = load("ecr", &s, 5555) else {
            panic!()
        };
        assert_eq!(
            (e.region.as_str(), e.access_key, e.registry_id),
            ("us-west-2", None, None)
        );
        let (_d, s) = dir(&[
            ("key.json", r#"{"project_id":"my-proj","private_key":"k"}"#),
            ("hostname", ""),
        ]);
        let Ok(Location::Gcr(g)) = load("gcr", &s, 5555) else {
            panic!()
        };
        assert_eq!(
            (g.project_id.as_str(), g.hostname.as_deref()),
            ("my-proj", None)
        );
        assert!(!format!("{g:?}").contains("private_key"));
    }

    #[test]
    fn problems_name_the_file() {
        let (d, s) = dir(&[("organization", "")]);
        let errs = load("off-cluster", &s, 5555).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].contains(&d.path().join("organization").display().to_string())
                && errs[0].contains("is empty")
        );
        let (_d, s) = dir(&[]);
        assert!(load("ecr", &s, 5555).unwrap_err()[0].contains("ECR needs a region"));
        let (_d, s) = dir(&[("key.json", "{}")]);
        assert!(load("gcr", &s, 5555).unwrap_err()[0].contains("project_id"));
        let (_d, s) = dir(&[]);
        assert!(
            load("quay", &s, 5555).unwrap_err()[0].contains("on-cluster, off-cluster, ecr or gcr")
        );
    }
}
