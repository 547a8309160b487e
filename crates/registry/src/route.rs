//! Parsing `/v2/<name>/...` into a typed target. Repository names have any number of `/`-separated
//! components, so the path is split at its last `/` and the part before must end in one of the
//! API's fixed segments; the name is what precedes that segment.

use oci::{NameError, RepoName};

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Manifest(RepoName, String),
    Blob(RepoName, String),
    /// `POST /v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    Upload(RepoName, String),
    Tags(RepoName),
    Referrers(RepoName, String),
}

impl Target {
    /// The repository the request is about.
    pub fn name(&self) -> &RepoName {
        match self {
            Target::Manifest(n, _)
            | Target::Blob(n, _)
            | Target::Uploads(n)
            | Target::Upload(n, _)
            | Target::Tags(n)
            | Target::Referrers(n, _) => n,
        }
    }

    /// The same request about another repository (a mirrored one, as the cache names it).
    pub fn with_name(self, name: RepoName) -> Target {
        match self {
            Target::Manifest(_, r) => Target::Manifest(name, r),
            Target::Blob(_, d) => Target::Blob(name, d),
            Target::Uploads(_) => Target::Uploads(name),
            Target::Upload(_, id) => Target::Upload(name, id),
            Target::Tags(_) => Target::Tags(name),
            Target::Referrers(_, d) => Target::Referrers(name, d),
        }
    }

    /// A fixed label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Manifest(..) => "manifest",
            Target::Blob(..) => "blob",
            Target::Uploads(..) | Target::Upload(..) => "upload",
            Target::Tags(..) => "tags",
            Target::Referrers(..) => "referrers",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No API endpoint has this shape.
    NoRoute,
    Name(NameError),
}

/// `rest` is the path after `/v2/`, already percent-decoded.
pub fn parse(rest: &str) -> Result<Target, RouteError> {
    let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NoRoute)?;
    let name = |suffix: &str| -> Result<RepoName, RouteError> {
        let name = head.strip_suffix(suffix).ok_or(RouteError::NoRoute)?;
        name.parse().map_err(RouteError::Name)
    };
    if last == "list" && head.ends_with("/tags") {
        return Ok(Target::Tags(name("/tags")?));
    }
    if head.ends_with("/blobs/uploads") {
        let repo = name("/blobs/uploads")?;
        return Ok(if last.is_empty() {
            Target::Uploads(repo)
        } else {
            Target::Upload(repo, last.to_owned())
        });
    }
    if last.is_empty() {
        return Err(RouteError::NoRoute);
    }
    let last = last.to_owned();
    if head.ends_with("/manifests") {
        Ok(Target::Manifest(name("/manifests")?, last))
    } else if head.ends_with("/blobs") {
        Ok(Target::Blob(name("/blobs")?, last))
    } else if head.ends_with("/referrers") {
        Ok(Target::Referrers(name("/referrers")?, last))
    } else {
        Err(RouteError::NoRoute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(
            parse("a/b/c/manifests/latest"),
            Ok(Target::Manifest(n("a/b/c"), "latest".into()))
        );
        assert_eq!(parse("a/blobs/uploads/"), Ok(Target::Uploads(n("a"))));
        assert_eq!(
            parse("a/blobs/uploads/x"),
            Ok(Target::Upload(n("a"), "x".into()))
        );
        assert_eq!(
            parse("blobs/blobs/d"),
            Ok(Target::Blob(n("blobs"), "d".into()))
        );
        assert_eq!(
            parse("x/manifests/blobs/d"),
            Ok(Target::Blob(n("x/manifests"), "d".into()))
        );
        assert_eq!(parse("a/tags/list"), Ok(Target::Tags(n("a"))));
        assert_eq!(
            parse("a/referrers/d"),
            Ok(Target::Referrers(n("a"), "d".into()))
        );
    }

    #[test]
    fn rejects() {
        for bad in ["", "a", "a/manifests/", "a/nothing/x", "manifests/x"] {
            assert_eq!(parse(bad), Err(RouteError::NoRoute), "{bad:?}");
        }
        assert!(matches!(parse("/manifests/x"), Err(RouteError::Name(_))));
        assert!(matches!(
            parse("../etc/manifests/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(parse("A/blobs/x"), Err(RouteError::Name(_))));
    }
}
