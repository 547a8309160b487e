//! Image references as Docker reads them: `[host[:port]/]path[:tag][@digest]`, where the first
//! component is a host only if it contains `.` or `:` or is `localhost`; otherwise the image is
//! on Docker Hub, whose one-component names live under `library/`.

use std::fmt;

/// The API host of Docker Hub (`docker.io` in names).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Docker's rule: `(host, rest)` when the first path component names a host (it contains `.`
/// or `:`, or is `localhost`); `None` when the image is on Docker Hub.
pub(crate) fn split_host(image: &str) -> Option<(&str, &str)> {
    image
        .split_once('/')
        .filter(|(first, _)| first.contains(['.', ':']) || *first == "localhost")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry's API host (`registry-1.docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    /// A tag, or a digest (`sha256:…`).
    pub reference: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an image reference: use [host[:port]/]name[:tag|@digest]")]
pub struct ReferenceError(pub String);

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let bad = || ReferenceError(text.to_owned());
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                digest.parse::<oci::Digest>().map_err(|_| bad())?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        let (host, path) = split_host(rest).unwrap_or(("docker.io", rest));
        // A tag follows the last ':' after the last '/' (a port's ':' is in the host).
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t)),
            _ => (path, None),
        };
        let registry = match host {
            "docker.io" | "index.docker.io" => DOCKER_HUB_API,
            other => other,
        };
        let repository = if registry == DOCKER_HUB_API && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        repository.parse::<oci::RepoName>().map_err(|_| bad())?;
        let reference = match (digest, tag) {
            (Some(d), _) => d.to_owned(),
            (None, Some(t)) => {
                t.parse::<oci::Tag>().map_err(|_| bad())?;
                t.to_owned()
            }
            (None, None) => "latest".to_owned(),
        };
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository,
            reference,
        })
    }

    /// The same repository at another tag or digest.
    pub fn at(&self, reference: &str) -> ImageRef {
        ImageRef {
            reference: reference.to_owned(),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, String) {
        let r = ImageRef::parse(s).unwrap();
        (r.registry, r.repository, r.reference)
    }

    #[test]
    fn docker_rules() {
        let p = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
        assert_eq!(
            parts("alpine"),
            p(DOCKER_HUB_API, "library/alpine", "latest")
        );
        assert_eq!(
            parts("deis/example:v2"),
            p(DOCKER_HUB_API, "deis/example", "v2")
        );
        assert_eq!(
            parts("127.0.0.1:5555/web:v3"),
            p("127.0.0.1:5555", "web", "v3")
        );
        assert_eq!(parts("localhost/a/b"), p("localhost", "a/b", "latest"));
        assert_eq!(
            parts("quay.io/org/app:git-c0ffee00"),
            p("quay.io", "org/app", "git-c0ffee00")
        );
        let d = "sha256:".to_owned() + &"a".repeat(64);
        assert_eq!(
            parts(&format!("gcr.io/p/app@{d}")),
            p("gcr.io", "p/app", &d)
        );
        assert_eq!(
            ImageRef::parse(&format!("gcr.io/p/app@{d}"))
                .unwrap()
                .to_string(),
            format!("gcr.io/p/app@{d}")
        );
        for bad in ["", "UPPER/case", "a:b:c", "host.com/", "x@sha256:zz"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
