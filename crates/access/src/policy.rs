//! Who may do what to which repositories. Without a policy file every authenticated user may do
//! everything and anonymous callers nothing (distribution's htpasswd behaviour).
//!
//! ```yaml
//! anonymous_pull: ["public/*"]      # repositories anyone may pull
//! rules:
//!   - users: [builder]              # names from the htpasswd file; "*" = any authenticated user
//!     repositories: ["*"]           # "*" everything, "team/*" a prefix, else an exact name
//!     actions: [pull, push, delete]
//! ```

use std::collections::BTreeSet;

use crate::{Action, ConfigError};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    anonymous_pull: Vec<String>,
    #[serde(default = "everything_for_users")]
    rules: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    users: Vec<String>,
    repositories: Vec<String>,
    actions: Vec<Action>,
}

fn everything_for_users() -> Vec<Rule> {
    vec![Rule {
        users: vec!["*".into()],
        repositories: vec!["*".into()],
        actions: vec![Action::Pull, Action::Push, Action::Delete],
    }]
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            anonymous_pull: Vec::new(),
            rules: everything_for_users(),
        }
    }
}

impl Policy {
    pub fn load(path: &std::path::Path) -> Result<Policy, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        Policy::parse(&text).map_err(|ConfigError::Invalid(m)| {
            ConfigError::Invalid(format!("{}: {m}", path.display()))
        })
    }

    pub fn parse(text: &str) -> Result<Policy, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| {
            ConfigError::Invalid(format!(
                "{e} (expected anonymous_pull: [patterns] and rules: [{{users, repositories, actions: [pull|push|delete]}}])"
            ))
        })
    }

    /// Everyone may pull these too.
    pub fn with_anonymous_pull(mut self, patterns: impl IntoIterator<Item = String>) -> Policy {
        self.anonymous_pull.extend(patterns);
        self
    }

    pub fn anonymous_pull(&self) -> bool {
        !self.anonymous_pull.is_empty()
    }

    pub fn granted(&self, user: Option<&str>, repository: &str) -> BTreeSet<Action> {
        let mut actions = BTreeSet::new();
        if self.anonymous_pull.iter().any(|p| matches(p, repository)) {
            actions.insert(Action::Pull);
        }
        let Some(user) = user else {
            return actions;
        };
        for rule in &self.rules {
            let user_ok = rule.users.iter().any(|u| u == "*" || u == user);
            if user_ok && rule.repositories.iter().any(|p| matches(p, repository)) {
                actions.extend(rule.actions.iter().copied());
            }
        }
        actions
    }
}

fn matches(pattern: &str, repository: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => repository.starts_with(prefix),
        None => pattern == repository,
    }
}
