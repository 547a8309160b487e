//! Where app images live (deis-registry-spec §2.3): the in-cluster registry, an off-cluster
//! username/password registry, ECR or GCR, with what each needs. Reading these from Workflow's
//! inputs (`DEIS_REGISTRY_LOCATION` and the mounted registry-secret) is `workflow`'s job.

use secrets::Secret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The in-cluster registry, reached on every node through `127.0.0.1:<host_port>`.
    OnCluster {
        host_port: u16,
    },
    OffCluster(OffCluster),
    Ecr(Ecr),
    Gcr(Gcr),
}

/// Any registry with long-lived username/password (ACR, Docker Hub, quay.io, self-hosted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffCluster {
    /// Empty: Docker Hub.
    pub hostname: String,
    pub organization: String,
    pub username: String,
    pub password: Secret,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ecr {
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub region: String,
    /// The brief says to leave these empty; honoured when set, as Deis did.
    pub registry_id: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gcr {
    /// The service-account key JSON (already decoded from the chart's base64).
    pub key_json: Secret,
    pub project_id: String,
    /// Empty: `gcr.io`.
    pub hostname: Option<String>,
    /// Artifact Registry (`<region>-docker.pkg.dev`): the repository images go in.
    pub repository: Option<String>,
}

impl Location {
    /// The name used in secret names (`<prefix>-<name>`) and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Location::OnCluster { .. } => "on-cluster",
            Location::OffCluster(_) => "off-cluster",
            Location::Ecr(_) => "ecr",
            Location::Gcr(_) => "gcr",
        }
    }
}
