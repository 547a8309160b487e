//! Which object storage the registry uses, from any of three sources that give the same result:
//! flags, distribution's `REGISTRY_STORAGE_*` env vars (both arrive in [`StorageInputs`] through
//! clap), and Workflow's `REGISTRY_STORAGE` with the `objectstorage-keyfile` secret mounted at
//! `/var/run/secrets/deis/registry/creds/` (deis-registry-spec §3.1). A flag or env var wins over
//! the key file. Every problem is reported at once, each naming the key, where it was looked for,
//! and the fix.

use std::fmt;
use std::path::PathBuf;

use ::storage::Settings;
use secrets::{Secret, SecretDir};

/// Flags and env vars as parsed (`None`: not given), plus the mounted key files.
#[derive(Debug, Default)]
pub struct StorageInputs {
    /// `REGISTRY_STORAGE`: filesystem | s3 | gcs | azure | minio (swift is refused).
    pub storage: Option<String>,
    pub creds: Option<SecretDir>,
    pub filesystem_root: PathBuf,
    pub s3_bucket: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_access_key: Option<Secret>,
    pub s3_secret_key: Option<Secret>,
    pub s3_path_style: Option<bool>,
    pub gcs_bucket: Option<String>,
    pub gcs_key_file: Option<PathBuf>,
    pub azure_account: Option<String>,
    pub azure_key: Option<Secret>,
    pub azure_container: Option<String>,
    pub azure_endpoint: Option<String>,
    /// `DEIS_MINIO_SERVICE_HOST` / `_PORT`: the in-cluster MinIO's service link.
    pub minio_host: Option<String>,
    pub minio_port: Option<String>,
    /// Prefix of every key in the bucket (distribution's `rootdirectory`).
    pub root_directory: Option<String>,
}

/// Every configuration problem found, one per line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub struct StorageError(pub Vec<String>);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// One setting: its flag, env var, and Workflow key file.
struct Key {
    flag: &'static str,
    env: &'static str,
    file: Option<&'static str>,
}

const S3_BUCKET: Key = Key {
    flag: "--s3-bucket",
    env: "REGISTRY_STORAGE_S3_BUCKET",
    file: Some("registry-bucket"),
};
const S3_REGION: Key = Key {
    flag: "--s3-region",
    env: "REGISTRY_STORAGE_S3_REGION",
    file: Some("region"),
};
const S3_ACCESS: Key = Key {
    flag: "--s3-access-key",
    env: "REGISTRY_STORAGE_S3_ACCESSKEY",
    file: Some("accesskey"),
};
const S3_SECRET: Key = Key {
    flag: "--s3-secret-key",
    env: "REGISTRY_STORAGE_S3_SECRETKEY",
    file: Some("secretkey"),
};
const GCS_BUCKET: Key = Key {
    flag: "--gcs-bucket",
    env: "REGISTRY_STORAGE_GCS_BUCKET",
    file: Some("registry-bucket"),
};
const GCS_KEY: Key = Key {
    flag: "--gcs-key-file",
    env: "REGISTRY_STORAGE_GCS_KEYFILE",
    file: Some("key.json"),
};
const AZ_ACCOUNT: Key = Key {
    flag: "--azure-account-name",
    env: "REGISTRY_STORAGE_AZURE_ACCOUNTNAME",
    file: Some("accountname"),
};
const AZ_KEY: Key = Key {
    flag: "--azure-account-key",
    env: "REGISTRY_STORAGE_AZURE_ACCOUNTKEY",
    file: Some("accountkey"),
};
const AZ_CONTAINER: Key = Key {
    flag: "--azure-container",
    env: "REGISTRY_STORAGE_AZURE_CONTAINER",
    file: Some("registry-container"),
};
const MINIO_HOST: Key = Key {
    flag: "--minio-host",
    env: "DEIS_MINIO_SERVICE_HOST",
    file: None,
};
const MINIO_PORT: Key = Key {
    flag: "--minio-port",
    env: "DEIS_MINIO_SERVICE_PORT",
    file: None,
};

/// How an operator sets `setting` (flag, env var, key file), for storage's errors.
pub fn where_to_set(setting: ::storage::Setting) -> String {
    use ::storage::Setting::*;
    let key = match setting {
        FilesystemRoot => return "--data-dir / QUAYSIDE_DATA_DIR".to_owned(),
        S3Bucket => S3_BUCKET,
        GcsBucket => GCS_BUCKET,
        GcsKeyFile => GCS_KEY,
        AzureKey => AZ_KEY,
        AzureContainer => AZ_CONTAINER,
    };
    match key.file {
        Some(file) => format!("{} / {} / key file {file}", key.flag, key.env),
        None => format!("{} / {}", key.flag, key.env),
    }
}

struct Resolver<'a> {
    storage: &'a str,
    creds: Option<&'a SecretDir>,
    errors: Vec<String>,
}

impl Resolver<'_> {
    /// The flag/env value, else the key file's (trailing whitespace dropped: `kubectl create
    /// secret --from-file` keeps the newline editors add).
    fn optional(&self, given: Option<&str>, key: &Key) -> Option<String> {
        let from_file = || {
            let file = key.file?;
            self.creds?.get(file).map(|v| v.trim_end().to_owned())
        };
        given
            .map(str::to_owned)
            .or_else(from_file)
            .filter(|v| !v.is_empty())
    }

    fn required(&mut self, given: Option<&str>, key: &Key, what: &str) -> String {
        if let Some(v) = self.optional(given, key) {
            return v;
        }
        let file = match (key.file, self.creds) {
            (Some(file), Some(creds)) => {
                let path = creds.path(file);
                let state = if path.exists() {
                    "is empty"
                } else {
                    "does not exist"
                };
                format!(
                    ", or the key `{file}` of the objectstorage-keyfile secret ({} {state})",
                    path.display()
                )
            }
            _ => String::new(),
        };
        self.errors.push(format!(
            "REGISTRY_STORAGE={}: {what} is not set: set {} / {}{file}",
            self.storage, key.flag, key.env
        ));
        String::new()
    }
}

impl StorageInputs {
    pub fn resolve(&self) -> Result<Settings, StorageError> {
        let storage = self.storage.as_deref().unwrap_or("filesystem").trim();
        let mut r = Resolver {
            storage,
            creds: self.creds.as_ref(),
            errors: Vec::new(),
        };
        let root = self.root_directory.clone().unwrap_or_default();
        let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
        // Empty or absent keys are `None`: the S3 client then uses the default credential chain.
        let s3_keys = |r: &Resolver| {
            (
                r.optional(secret(&self.s3_access_key).as_deref(), &S3_ACCESS)
                    .map(Secret::new),
                r.optional(secret(&self.s3_secret_key).as_deref(), &S3_SECRET)
                    .map(Secret::new),
            )
        };
        let settings = match storage {
            "" | "filesystem" => Settings::Filesystem {
                root: self.filesystem_root.clone(),
            },
            "s3" => {
                let bucket = r.required(self.s3_bucket.as_deref(), &S3_BUCKET, "the bucket");
                let region = r.required(self.s3_region.as_deref(), &S3_REGION, "the region");
                let (access_key, secret_key) = s3_keys(&r);
                Settings::S3 {
                    bucket,
                    region,
                    endpoint: self.s3_endpoint.clone().filter(|e| !e.is_empty()),
                    access_key,
                    secret_key,
                    path_style: self.s3_path_style.unwrap_or(false),
                    root,
                }
            }
            "minio" => {
                // Workflow's in-cluster MinIO: fixed bucket and region, endpoint from the
                // service link, path-style addressing.
                let host = r.required(
                    self.minio_host.as_deref(),
                    &MINIO_HOST,
                    "the MinIO service host",
                );
                let port = r.required(
                    self.minio_port.as_deref(),
                    &MINIO_PORT,
                    "the MinIO service port",
                );
                let (access_key, secret_key) = s3_keys(&r);
                Settings::S3 {
                    bucket: "registry".into(),
                    region: "us-east-1".into(),
                    endpoint: Some(format!("http://{host}:{port}")),
                    access_key,
                    secret_key,
                    path_style: true,
                    root,
                }
            }
            "gcs" => {
                let bucket = r.required(self.gcs_bucket.as_deref(), &GCS_BUCKET, "the bucket");
                let key_file = match &self.gcs_key_file {
                    Some(path) => path.clone(),
                    None => match &self.creds {
                        Some(creds) if creds.path("key.json").is_file() => creds.path("key.json"),
                        _ => {
                            r.required(None, &GCS_KEY, "the service account key (key.json)");
                            PathBuf::new()
                        }
                    },
                };
                Settings::Gcs {
                    bucket,
                    key_file,
                    root,
                }
            }
            "azure" => Settings::Azure {
                account: r.required(
                    self.azure_account.as_deref(),
                    &AZ_ACCOUNT,
                    "the storage account name",
                ),
                key: Secret::new(r.required(
                    secret(&self.azure_key).as_deref(),
                    &AZ_KEY,
                    "the storage account key",
                )),
                container: r.required(
                    self.azure_container.as_deref(),
                    &AZ_CONTAINER,
                    "the container",
                ),
                endpoint: self.azure_endpoint.clone().filter(|e| !e.is_empty()),
                root,
            },
            "swift" => {
                return Err(StorageError(vec![
                    "REGISTRY_STORAGE=swift: OpenStack Swift is not supported by Quayside. Use s3 \
                     (Swift's S3 API works), gcs, azure, minio or filesystem."
                        .into(),
                ]));
            }
            other => {
                return Err(StorageError(vec![format!(
                    "REGISTRY_STORAGE={other:?} / --storage: unknown storage; use filesystem, s3, gcs, azure or minio"
                )]));
            }
        };
        if r.errors.is_empty() {
            Ok(settings)
        } else {
            Err(StorageError(r.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(files: &[(&str, &str)]) -> (tempfile::TempDir, SecretDir) {
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in files {
            std::fs::write(dir.path().join(k), v).unwrap();
        }
        let secret = SecretDir::new(dir.path());
        (dir, secret)
    }

    fn inputs(storage: &str, creds: SecretDir) -> StorageInputs {
        StorageInputs {
            storage: Some(storage.into()),
            creds: Some(creds),
            ..Default::default()
        }
    }

    #[test]
    fn s3_from_workflow_key_files() {
        let (_d, c) = creds(&[
            ("accesskey", "AK"),
            ("secretkey", "SK\n"),
            ("region", "us-west-2"),
            ("registry-bucket", "regs"),
        ]);
        let s = inputs("s3", c).resolve().unwrap();
        assert_eq!(
            s,
            Settings::S3 {
                bucket: "regs".into(),
                region: "us-west-2".into(),
                endpoint: None,
                access_key: Some(Secret::new("AK")),
                secret_key: Some(Secret::new("SK")),
                path_style: false,
                root: String::new(),
            }
        );
        assert!(!format!("{s:?}").contains("SK"), "secret in Debug");
    }

    #[test]
    fn flags_win_over_key_files_and_empty_keys_mean_default_chain() {
        let (_d, c) = creds(&[
            ("accesskey", ""),
            ("secretkey", ""),
            ("region", "us-west-2"),
            ("registry-bucket", "regs"),
        ]);
        let mut i = inputs("s3", c);
        i.s3_bucket = Some("other".into());
        let Settings::S3 {
            bucket,
            access_key,
            secret_key,
            ..
        } = i.resolve().unwrap()
        else {
            panic!()
        };
        assert_eq!(bucket, "other");
        assert_eq!((access_key, secret_key), (None, None));
    }

    #[test]
    fn missing_keys_name_the_file_and_the_fix() {
        let (d, c) = creds(&[("registry-bucket", "")]);
        let err = inputs("s3", c).resolve().unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        let bucket = &err.0[0];
        assert!(
            bucket.contains("--s3-bucket") && bucket.contains("REGISTRY_STORAGE_S3_BUCKET"),
            "{bucket}"
        );
        assert!(
            bucket.contains(&d.path().join("registry-bucket").display().to_string())
                && bucket.contains("is empty"),
            "{bucket}"
        );
        assert!(
            err.0[1].contains("region") && err.0[1].contains("does not exist"),
            "{}",
            err.0[1]
        );
    }

    #[test]
    fn minio_special_case() {
        let (_d, c) = creds(&[("accesskey", "minio"), ("secretkey", "minio123")]);
        let mut i = inputs("minio", c);
        i.minio_host = Some("10.0.0.5".into());
        i.minio_port = Some("9000".into());
        let Settings::S3 {
            bucket,
            region,
            endpoint,
            path_style,
            ..
        } = i.resolve().unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (bucket.as_str(), region.as_str()),
            ("registry", "us-east-1")
        );
        assert_eq!(endpoint.as_deref(), Some("http://10.0.0.5:9000"));
        assert!(path_style);
        let (_d, c) = creds(&[]);
        let err = inputs("minio", c).resolve().unwrap_err();
        assert!(err.0[0].contains("DEIS_MINIO_SERVICE_HOST"), "{err}");
    }

    #[test]
    fn gcs_and_azure() {
        let (d, c) = creds(&[("key.json", "{}"), ("registry-bucket", "b")]);
        let s = inputs("gcs", c).resolve().unwrap();
        assert_eq!(
            s,
            Settings::Gcs {
                bucket: "b".into(),
                key_file: d.path().join("key.json"),
                root: String::new()
            }
        );
        let (_d, c) = creds(&[("registry-bucket", "b")]);
        let err = inputs("gcs", c).resolve().unwrap_err();
        assert!(
            err.0[0].contains("key.json") && err.0[0].contains("does not exist"),
            "{err}"
        );

        let (_d, c) = creds(&[
            ("accountname", "acct"),
            ("accountkey", "KEY"),
            ("registry-container", "regs"),
        ]);
        let s = inputs("azure", c).resolve().unwrap();
        let Settings::Azure {
            account,
            key,
            container,
            ..
        } = &s
        else {
            panic!()
        };
        assert_eq!(
            (account.as_str(), key.expose(), container.as_str()),
            ("acct", "KEY", "regs")
        );
        assert!(!format!("{s:?}").contains("KEY"));
        let (_d, c) = creds(&[]);
        assert_eq!(inputs("azure", c).resolve().unwrap_err().0.len(), 3);
    }

    #[test]
    fn swift_and_unknown_are_refused_and_filesystem_is_the_default() {
        let (_d, c) = creds(&[]);
        assert!(inputs("swift", c).resolve().unwrap_err().0[0].contains("not supported"));
        let (_d, c) = creds(&[]);
        assert!(inputs("ceph", c).resolve().unwrap_err().0[0].contains("unknown storage"));
        let i = StorageInputs {
            filesystem_root: "/data".into(),
            ..Default::default()
        };
        assert_eq!(
            i.resolve().unwrap(),
            Settings::Filesystem {
                root: "/data".into()
            }
        );
    }
}
