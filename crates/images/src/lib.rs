//! Where app images live and what they are called: the one home of the image rules of Workflow's
//! controller and builder (deis-registry-spec §5) — the registry [`location`]s, image
//! references with Docker's host rule ([`ImageRef`]), the image name an app's build gets for each
//! location, the pull secret its pods need and the `.dockerconfigjson` shapes Workflow wrote,
//! reserved names, the EXPOSEd port and the controller's [`port`] rules. Pure: no I/O.
//!
//! Dependencies: `oci` (repository names, tags, digests), `secrets` (passwords stay redacted),
//! `base64` (the `auth` field), `serde_json` (dockerconfigjson, image configs).

pub mod location;
pub mod port;
mod reference;

use base64::Engine as _;
use secrets::Secret;

pub use location::Location;
pub use reference::{DOCKER_HUB_API, ImageRef, ReferenceError};

/// Docker Hub's key in a dockerconfigjson `auths` map.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// Which tag a build gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A Dockerfile `git push`: `git-<first 8 of the sha>`.
    GitSha(String),
    /// An image release (`deis pull`): `v<N>`.
    Version(u64),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("app name {0:?} is not a valid repository name component")]
    App(String),
    #[error("git sha {0:?} must be at least 8 hex characters")]
    Sha(String),
    #[error(
        "off-cluster images are <hostname>/<organization>/<app>: set organization in the registry-secret"
    )]
    NoOrganization,
    #[error(
        "the ECR registry host is unknown without a token request: set registryid or hostname in the registry-secret"
    )]
    EcrAccountUnknown,
    #[error(
        "Artifact Registry ({0}) names images <host>/<project>/<repository>/<app>: set the key repository in the registry-secret (registry-token-refresher.gcr.repository in the chart's values)"
    )]
    ArtifactRegistryRepository(String),
}

impl Tag {
    fn render(&self) -> Result<String, NameError> {
        match self {
            Tag::GitSha(sha) => {
                let ok = sha.len() >= 8 && sha.bytes().all(|b| b.is_ascii_hexdigit());
                if ok {
                    Ok(format!("git-{}", &sha[..8]))
                } else {
                    Err(NameError::Sha(sha.clone()))
                }
            }
            Tag::Version(n) => Ok(format!("v{n}")),
        }
    }
}

/// The full image reference (`host/path:tag`) for `app` at `location`.
pub fn image_name(location: &Location, app: &str, tag: &Tag) -> Result<String, NameError> {
    let valid_app = !app.is_empty()
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !app.starts_with('-');
    if !valid_app {
        return Err(NameError::App(app.to_owned()));
    }
    let tag = tag.render()?;
    let repository = match location {
        Location::OnCluster { host_port } => format!("127.0.0.1:{host_port}/{app}"),
        Location::OffCluster(o) if o.organization.is_empty() => {
            return Err(NameError::NoOrganization);
        }
        Location::OffCluster(o) if bare_host(&o.hostname).is_empty() => {
            format!("{}/{app}", o.organization)
        }
        Location::OffCluster(o) => format!("{}/{}/{app}", bare_host(&o.hostname), o.organization),
        Location::Ecr(e) => {
            let host = match (&e.hostname, &e.registry_id) {
                (Some(host), _) => bare_host(host).to_owned(),
                (None, Some(account)) => format!("{account}.dkr.ecr.{}.amazonaws.com", e.region),
                (None, None) => return Err(NameError::EcrAccountUnknown),
            };
            format!("{host}/{app}")
        }
        Location::Gcr(g) => {
            let host = g.hostname.as_deref().map_or("gcr.io", bare_host);
            // Domain-scoped projects (`example.com:proj`) are `example.com/proj` in image names.
            let project = g.project_id.replace(':', "/");
            if host.ends_with(".pkg.dev") {
                let repo = g
                    .repository
                    .as_deref()
                    .ok_or_else(|| NameError::ArtifactRegistryRepository(host.to_owned()))?;
                format!("{host}/{project}/{repo}/{app}")
            } else {
                format!("{host}/{project}/{app}")
            }
        }
    };
    Ok(format!("{repository}:{tag}"))
}

/// A registry `hostname` as operators write it (`https://myregistry.azurecr.io/`), as image
/// names need it: without scheme or trailing slash, as Workflow's controller stripped it.
pub fn bare_host(hostname: &str) -> &str {
    let host = hostname.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    host.trim_end_matches('/')
}

/// The registry host of an image reference by Docker's rule: the first path component is a host
/// if it contains `.` or `:` or is `localhost`; otherwise the image is on Docker Hub.
pub fn registry_host(image: &str) -> &str {
    reference::split_host(image).map_or(DOCKER_HUB, |(host, _)| host)
}

/// An app's own registry credentials (`deis registry:set`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredentials {
    pub username: String,
    pub password: Secret,
    pub hostname: Option<String>,
}

/// The pull secret an app's pods reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSecret {
    pub name: String,
    /// The `.dockerconfigjson` to write, or `None` when another component owns the secret (the
    /// token refresher for ecr and gcr).
    pub dockerconfigjson: Option<Secret>,
}

/// deis-registry-spec §5.4, first match wins: the app's own credentials, then off-cluster's
/// registry-secret, then a reference to the refresher's ecr/gcr secret; on-cluster needs none.
pub fn pull_secret(
    location: &Location,
    app_credentials: Option<&AppCredentials>,
    image: &str,
    prefix: &str,
) -> Option<PullSecret> {
    if let Some(c) = app_credentials {
        let host = c
            .hostname
            .as_deref()
            .unwrap_or_else(|| registry_host(image));
        return Some(PullSecret {
            name: prefix.to_owned(),
            dockerconfigjson: Some(dockerconfigjson(host, &c.username, c.password.expose())),
        });
    }
    match location {
        Location::OnCluster { .. } => None,
        Location::OffCluster(o) => {
            let host = if o.hostname.is_empty() {
                DOCKER_HUB
            } else {
                &o.hostname
            };
            Some(PullSecret {
                name: format!("{prefix}-off-cluster"),
                dockerconfigjson: Some(dockerconfigjson(host, &o.username, o.password.expose())),
            })
        }
        Location::Ecr(_) | Location::Gcr(_) => Some(PullSecret {
            name: format!("{prefix}-{}", location.name()),
            dockerconfigjson: None,
        }),
    }
}

/// Workflow's own components: an image under `deis/<component>` may not be published as an app.
const RESERVED: &[&str] = &[
    "builder",
    "controller",
    "database",
    "dockerbuilder",
    "etcd",
    "minio",
    "registry",
    "router",
    "slugbuilder",
    "slugrunner",
    "workflow",
    "workflow-manager",
];

/// `Some(message)` when `repository` names a platform component (deis-registry-spec §5.2).
pub fn reserved(repository: &str) -> Option<String> {
    let parts: Vec<&str> = repository.split('/').collect();
    let hit = parts
        .windows(2)
        .any(|w| w[0] == "deis" && RESERVED.contains(&w[1]));
    hit.then(|| format!("Repository name {repository} is not allowed, as it is reserved by Deis"))
}

/// The port an image exposes, as Workflow's controller read it: the first `ExposedPorts` key
/// (Docker writes them sorted), its number before `/`.
pub fn exposed_port(config: &serde_json::Value) -> Option<u16> {
    let ports = config["config"]["ExposedPorts"].as_object()?;
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort();
    keys.first()?.split('/').next()?.parse().ok()
}

/// `{"auths":{"<host>":{"auth":"base64(user:password)"}}}`, as the controller writes it.
pub fn dockerconfigjson(host: &str, username: &str, password: &str) -> Secret {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    Secret::new(serde_json::json!({"auths": {host: {"auth": auth}}}).to_string())
}

/// The same with `"email":"none@none.com"`, as Workflow's token refresher wrote ECR and GCR
/// pull secrets.
pub fn refresher_dockerconfigjson(key: &str, username: &str, password: &str) -> Secret {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let entry = serde_json::json!({"auth": auth, "email": "none@none.com"});
    Secret::new(serde_json::json!({"auths": {key: entry}}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::{Ecr, Gcr, OffCluster};

    #[test]
    fn reserved_names_and_ports() {
        assert!(
            reserved("deis/controller")
                .unwrap()
                .contains("reserved by Deis")
        );
        assert!(reserved("deis/router").is_some());
        assert!(reserved("myorg/deis/builder").is_some());
        assert_eq!(reserved("deis/example-go"), None);
        assert_eq!(reserved("acme/controller"), None);
        let config =
            serde_json::json!({"config": {"ExposedPorts": {"8080/tcp": {}, "443/tcp": {}}}});
        assert_eq!(exposed_port(&config), Some(443));
        assert_eq!(exposed_port(&serde_json::json!({"config": {}})), None);
    }

    fn off(hostname: &str, org: &str) -> Location {
        Location::OffCluster(OffCluster {
            hostname: hostname.into(),
            organization: org.into(),
            username: "u".into(),
            password: Secret::new("p"),
        })
    }

    fn ecr(registry_id: Option<&str>, hostname: Option<&str>) -> Location {
        Location::Ecr(Ecr {
            access_key: None,
            secret_key: None,
            region: "us-west-2".into(),
            registry_id: registry_id.map(Into::into),
            hostname: hostname.map(Into::into),
        })
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn names_per_location() {
        let sha = Tag::GitSha(SHA.into());
        let on = Location::OnCluster { host_port: 5555 };
        assert_eq!(
            image_name(&on, "myapp", &sha).unwrap(),
            "127.0.0.1:5555/myapp:git-01234567"
        );
        assert_eq!(
            image_name(&on, "myapp", &Tag::Version(3)).unwrap(),
            "127.0.0.1:5555/myapp:v3"
        );
        assert_eq!(
            image_name(&off("myregistry.azurecr.io", "myorg"), "myapp", &sha).unwrap(),
            "myregistry.azurecr.io/myorg/myapp:git-01234567"
        );
        assert_eq!(
            image_name(&off("", "myorg"), "myapp", &sha).unwrap(),
            "myorg/myapp:git-01234567"
        );
        assert_eq!(
            image_name(&off("quay.io", ""), "myapp", &sha),
            Err(NameError::NoOrganization)
        );
        assert_eq!(
            image_name(&ecr(Some("123456789012"), None), "myapp", &sha).unwrap(),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com/myapp:git-01234567"
        );
        assert_eq!(
            image_name(
                &ecr(None, Some("https://1.dkr.ecr.eu-west-1.amazonaws.com")),
                "a",
                &Tag::Version(1)
            )
            .unwrap(),
            "1.dkr.ecr.eu-west-1.amazonaws.com/a:v1"
        );
        assert_eq!(
            image_name(&ecr(None, None), "a", &sha),
            Err(NameError::EcrAccountUnknown)
        );
        let gcr_in = |project: &str, host: Option<&str>, repository: Option<&str>| {
            Location::Gcr(Gcr {
                key_json: Secret::new("{}"),
                project_id: project.into(),
                hostname: host.map(Into::into),
                repository: repository.map(Into::into),
            })
        };
        let gcr = |project: &str, host: Option<&str>| gcr_in(project, host, None);
        assert_eq!(
            image_name(&gcr("my-proj", None), "a", &sha).unwrap(),
            "gcr.io/my-proj/a:git-01234567"
        );
        assert_eq!(
            image_name(&gcr("example.com:proj", None), "a", &sha).unwrap(),
            "gcr.io/example.com/proj/a:git-01234567"
        );
        // Artifact Registry needs its repository segment, and says so without one.
        assert_eq!(
            image_name(
                &gcr_in("p", Some("europe-docker.pkg.dev"), Some("apps")),
                "a",
                &Tag::Version(2)
            )
            .unwrap(),
            "europe-docker.pkg.dev/p/apps/a:v2"
        );
        let missing = image_name(
            &gcr("p", Some("europe-docker.pkg.dev")),
            "a",
            &Tag::Version(2),
        );
        assert_eq!(
            missing,
            Err(NameError::ArtifactRegistryRepository(
                "europe-docker.pkg.dev".into()
            ))
        );
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("set the key repository")
        );
        // Hostnames written with a scheme or a trailing slash name images without them.
        assert_eq!(
            image_name(&gcr("p", Some("https://eu.gcr.io/")), "a", &Tag::Version(2)).unwrap(),
            "eu.gcr.io/p/a:v2"
        );
        let off = |hostname: &str| {
            Location::OffCluster(OffCluster {
                hostname: hostname.into(),
                organization: "org".into(),
                username: "u".into(),
                password: Secret::new("p"),
            })
        };
        for written in [
            "https://myregistry.azurecr.io",
            "http://myregistry.azurecr.io/",
            " myregistry.azurecr.io ",
        ] {
            assert_eq!(
                image_name(&off(written), "a", &Tag::Version(3)).unwrap(),
                "myregistry.azurecr.io/org/a:v3",
                "{written}"
            );
        }
        assert_eq!(
            image_name(&off("https://"), "a", &Tag::Version(3)).unwrap(),
            "org/a:v3"
        );
        assert!(matches!(
            image_name(&on, "My_App", &sha),
            Err(NameError::App(_))
        ));
        assert!(matches!(
            image_name(&on, "a", &Tag::GitSha("abc".into())),
            Err(NameError::Sha(_))
        ));
    }

    #[test]
    fn docker_host_rule() {
        assert_eq!(registry_host("quay.io/org/app:1"), "quay.io");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(registry_host("127.0.0.1:5555/app:v1"), "127.0.0.1:5555");
        assert_eq!(registry_host("library/alpine"), DOCKER_HUB);
        assert_eq!(registry_host("alpine"), DOCKER_HUB);
    }

    #[test]
    fn pull_secret_precedence() {
        let creds = AppCredentials {
            username: "bob".into(),
            password: Secret::new("pw"),
            hostname: None,
        };
        // 1. App credentials win everywhere; the host comes from the image (Docker Hub here).
        for loc in [
            Location::OnCluster { host_port: 5555 },
            off("quay.io", "o"),
            ecr(Some("1"), None),
        ] {
            let s = pull_secret(&loc, Some(&creds), "bob/private:1", "private-registry").unwrap();
            assert_eq!(s.name, "private-registry");
            let json: serde_json::Value =
                serde_json::from_str(s.dockerconfigjson.unwrap().expose()).unwrap();
            assert_eq!(json["auths"][DOCKER_HUB]["auth"], "Ym9iOnB3");
        }
        // 2. Off-cluster: from the registry-secret; empty hostname is Docker Hub.
        let s = pull_secret(&off("", "o"), None, "o/app:git-1", "private-registry").unwrap();
        assert_eq!(s.name, "private-registry-off-cluster");
        assert!(s.dockerconfigjson.unwrap().expose().contains(DOCKER_HUB));
        // 3. ecr/gcr: a reference only.
        let s = pull_secret(&ecr(Some("1"), None), None, "x", "pfx").unwrap();
        assert_eq!((s.name.as_str(), s.dockerconfigjson), ("pfx-ecr", None));
        // 4. on-cluster: none.
        assert_eq!(
            pull_secret(&Location::OnCluster { host_port: 5555 }, None, "x", "p"),
            None
        );
    }
}
