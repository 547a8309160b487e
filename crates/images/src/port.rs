//! Which port an app's pods get: Workflow's `Release.get_port` (deis-registry-spec §5.3),
//! evaluated on every deploy, scale and run. Only an on-cluster image without the app's own
//! registry credentials is read for its EXPOSEd port: elsewhere Kubernetes pulls the image, the
//! controller never sees it, so the app's `PORT` config is required.

/// How the release was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildType {
    /// `deis pull <image>`.
    Image,
    /// `git push` of a Dockerfile app.
    Dockerfile,
    /// `git push` of a buildpack (slug) app.
    Buildpack,
}

/// What the controller knows when it needs the port.
#[derive(Clone, Copy, Debug)]
pub struct PortQuestion<'a> {
    pub build: BuildType,
    /// The app's `PORT` config, as the user set it.
    pub config_port: Option<&'a str>,
    /// The app has its own registry credentials (`deis registry:set username=…`).
    pub app_credentials: bool,
    pub on_cluster: bool,
    /// The process type gets a Service (`web`, `cmd`).
    pub routable: bool,
}

/// The port, or what the caller must do to learn it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAnswer {
    Port(u16),
    /// A process type without a Service needs none.
    NoPort,
    /// Read the image's config and call [`from_image`].
    ReadImage,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("PORT needs to be set in the application config when using a private registry")]
    Required,
    #[error("PORT {0:?} must be a number from 1 to 65535")]
    Invalid(String),
    #[error("Expose a port or make the app non routable by changing the process type")]
    NotExposed,
}

/// The port a buildpack app gets ("buildpack type detected. Defaulting to $PORT 5000").
pub const BUILDPACK_PORT: u16 = 5000;

/// The controller's rules, first match wins.
pub fn decide(q: &PortQuestion) -> Result<PortAnswer, PortError> {
    if q.build == BuildType::Buildpack {
        return Ok(PortAnswer::Port(BUILDPACK_PORT));
    }
    let configured = q.config_port.map(parse).transpose()?;
    if q.app_credentials || !q.on_cluster {
        if !q.routable {
            return Ok(PortAnswer::NoPort);
        }
        return configured.map(PortAnswer::Port).ok_or(PortError::Required);
    }
    Ok(configured.map_or(PortAnswer::ReadImage, PortAnswer::Port))
}

/// The answer once the image was read: its first EXPOSEd port, which a routable app must have.
pub fn from_image(exposed: Option<u16>, routable: bool) -> Result<Option<u16>, PortError> {
    match exposed {
        None if routable => Err(PortError::NotExposed),
        port => Ok(port),
    }
}

fn parse(value: &str) -> Result<u16, PortError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PortError::Invalid(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(
        build: BuildType,
        port: Option<&str>,
        creds: bool,
        on_cluster: bool,
        routable: bool,
    ) -> Result<PortAnswer, PortError> {
        decide(&PortQuestion {
            build,
            config_port: port,
            app_credentials: creds,
            on_cluster,
            routable,
        })
    }

    #[test]
    fn every_branch_of_the_controllers_rules() {
        use BuildType::*;
        use PortAnswer::*;
        // Buildpack apps get 5000 whatever else holds.
        assert_eq!(
            ask(Buildpack, Some("8080"), true, false, true),
            Ok(Port(5000))
        );
        assert_eq!(ask(Buildpack, None, false, true, false), Ok(Port(5000)));
        // Private registry (app credentials, or not on-cluster): PORT or nothing.
        for (creds, on_cluster) in [(true, true), (false, false), (true, false)] {
            assert_eq!(
                ask(Image, Some("8080"), creds, on_cluster, true),
                Ok(Port(8080))
            );
            assert_eq!(
                ask(Image, None, creds, on_cluster, true),
                Err(PortError::Required)
            );
            assert_eq!(ask(Dockerfile, None, creds, on_cluster, false), Ok(NoPort));
            assert_eq!(
                ask(Image, Some("8080"), creds, on_cluster, false),
                Ok(NoPort)
            );
        }
        // On-cluster without credentials: PORT wins unread, else the image is read.
        assert_eq!(ask(Image, Some("3000"), false, true, true), Ok(Port(3000)));
        assert_eq!(ask(Dockerfile, None, false, true, true), Ok(ReadImage));
        assert_eq!(ask(Image, None, false, true, false), Ok(ReadImage));
        // PORT must be a port number.
        for bad in ["0", "65536", "http", "-1", ""] {
            assert_eq!(
                ask(Image, Some(bad), false, true, true),
                Err(PortError::Invalid(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(ask(Image, Some(" 80 "), false, true, true), Ok(Port(80)));
    }

    #[test]
    fn what_the_image_exposes() {
        assert_eq!(from_image(Some(8080), true), Ok(Some(8080)));
        assert_eq!(from_image(None, true), Err(PortError::NotExposed));
        assert_eq!(from_image(None, false), Ok(None));
        assert_eq!(
            PortError::Required.to_string(),
            "PORT needs to be set in the application config when using a private registry"
        );
    }
}
