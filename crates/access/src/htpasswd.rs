//! `htpasswd -B` files: `user:$2y$…` lines. Only bcrypt entries are accepted (MD5/SHA1/crypt
//! entries are weak and distribution refuses them too). Verifying bcrypt costs milliseconds by
//! design, so a successful check is remembered for a minute by a digest of user and password.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::ConfigError;

const REMEMBER: Duration = Duration::from_secs(60);

pub struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Htpasswd").field("users", &names).finish()
    }
}

impl Htpasswd {
    pub fn empty() -> Htpasswd {
        Htpasswd {
            users: HashMap::new(),
            verified: Mutex::default(),
        }
    }

    pub fn load(path: &std::path::Path) -> Result<Htpasswd, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        Htpasswd::parse(&text).map_err(|ConfigError::Invalid(m)| {
            ConfigError::Invalid(format!("{}: {m}", path.display()))
        })
    }

    pub fn parse(text: &str) -> Result<Htpasswd, ConfigError> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| ConfigError::Invalid(format!("line {}: not user:hash", n + 1)))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(ConfigError::Invalid(format!(
                    "line {} ({user}): not a bcrypt hash; create entries with htpasswd -B",
                    n + 1
                )));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::default(),
        })
    }

    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        let now = Instant::now();
        if let Ok(cache) = self.verified.lock()
            && cache
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < REMEMBER)
        {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok && let Ok(mut cache) = self.verified.lock() {
            cache.retain(|_, at| now.duration_since(*at) < REMEMBER);
            cache.insert(key, now);
        }
        ok
    }
}
