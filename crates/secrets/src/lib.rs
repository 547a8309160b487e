//! Mounted Kubernetes secrets (a directory with one file per key) and secret values that never
//! show in logs, errors or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print `<redacted>`; use [`Secret::expose`] where the
/// value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret mounted as a directory. Kubernetes' atomic writer keeps the real files under
/// `..data/` and symlinks each key beside it; following the key's name reads the current value,
/// and `..`-prefixed entries are never keys.
#[derive(Clone, Debug)]
pub struct SecretDir {
    dir: PathBuf,
}

impl SecretDir {
    pub fn new(dir: impl Into<PathBuf>) -> SecretDir {
        SecretDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The value of `key` as written (Workflow used the contents verbatim), or `None` when the
    /// file does not exist. Other read errors are reported as missing too, naming the file.
    pub fn get(&self, key: &str) -> Option<String> {
        if key.starts_with("..") {
            return None;
        }
        std::fs::read_to_string(self.path(key)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_atomic_writer_layout() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_11_27");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("region"), "us-west-2").unwrap();
        std::os::unix::fs::symlink("..2026_11_27", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/region", dir.path().join("region")).unwrap();
        let secret = SecretDir::new(dir.path());
        assert_eq!(secret.get("region").as_deref(), Some("us-west-2"));
        assert_eq!(secret.get("..data"), None);
        assert_eq!(secret.get("missing"), None);
    }
}
