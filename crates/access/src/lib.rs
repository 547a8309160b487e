//! Access control for the registry: who is asking (htpasswd Basic credentials, or a bearer token
//! this registry issued) and what they may do to which repository (a policy file).
//!
//! Two modes, as distribution has them: `Basic` challenges clients for a username and password;
//! `Token` challenges them with Docker's token flow (`WWW-Authenticate: Bearer realm=…,service=…,
//! scope=repository:<name>:<actions>`), and the token endpoint of the same binary trades
//! credentials (or none, for anonymous pulls) for a short-lived HS256 JWT listing the granted
//! actions. Any replica holding the shared secret validates any replica's tokens. Basic
//! credentials are also accepted in token mode, so the node proxy can inject them.
//!
//! Decisions happen before the registry looks anything up, so the answer for a repository the
//! caller may not read is the same whether it exists or not.
//!
//! Dependencies: `bcrypt` (htpasswd entries from `htpasswd -B`), `jsonwebtoken` (HS256 tokens,
//! RustCrypto backend: no C), `humantime` (issued_at), `serde-saphyr` (the policy file is YAML like the rest of a
//! cluster's configuration), `sha2` (cache keys for verified passwords).

mod htpasswd;
mod policy;
mod token;

use std::collections::BTreeSet;

use base64::Engine as _;

pub use htpasswd::Htpasswd;
pub use policy::Policy;
pub use token::{TokenIssuer, TokenResponse};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            // A token request for `*` asks for everything the caller may do.
            _ => None,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denial {
    /// No or wrong credentials: 401 with this `WWW-Authenticate` value.
    Unauthenticated { challenge: String },
    /// Known caller without the right: 403 `DENIED`.
    Forbidden,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

pub struct Access {
    users: Htpasswd,
    policy: Policy,
    /// `None`: Basic challenges.
    tokens: Option<TokenIssuer>,
}

/// A request's `Authorization` as this registry understands it.
enum Caller {
    Anonymous,
    User(String),
    /// A token's grants: (repository, actions).
    Token(Vec<(String, BTreeSet<Action>)>),
}

impl Access {
    pub fn basic(users: Htpasswd, policy: Policy) -> Access {
        Access {
            users,
            policy,
            tokens: None,
        }
    }

    pub fn token(users: Htpasswd, policy: Policy, issuer: TokenIssuer) -> Access {
        Access {
            users,
            policy,
            tokens: Some(issuer),
        }
    }

    pub fn issues_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// May the caller do `action` on `repository`? `realm` is where the token endpoint is (token
    /// mode's challenge names it).
    pub fn check(
        &self,
        authorization: Option<&str>,
        repository: &str,
        action: Action,
        realm: &str,
    ) -> Result<(), Denial> {
        let caller = self
            .caller(authorization)
            .map_err(|()| self.challenge(Some((repository, action)), realm))?;
        if self.granted(&caller, repository).contains(&action) {
            return Ok(());
        }
        match caller {
            // Anonymous (or a token without this scope): ask for credentials, as registries do.
            Caller::Anonymous | Caller::Token(_) => {
                Err(self.challenge(Some((repository, action)), realm))
            }
            Caller::User(_) => Err(Denial::Forbidden),
        }
    }

    /// `GET /v2/`: any authenticated caller. Anonymous callers always get the challenge, even
    /// where anonymous pulls are allowed: clients (skopeo, Docker, containerd) send credentials
    /// only after a challenge to `/v2/`, and without one every push of a logged-in client would
    /// go out anonymous. Clients without credentials go on to pull anonymously all the same.
    pub fn check_base(&self, authorization: Option<&str>, realm: &str) -> Result<(), Denial> {
        match self.caller(authorization) {
            Ok(Caller::Anonymous) | Err(()) => Err(self.challenge(None, realm)),
            Ok(_) => Ok(()),
        }
    }

    /// Whether the caller may see `repository` in the catalog (may pull it).
    pub fn can_list(&self, authorization: Option<&str>, repository: &str) -> bool {
        self.caller(authorization)
            .is_ok_and(|c| self.granted(&c, repository).contains(&Action::Pull))
    }

    /// The token endpoint: trades Basic credentials (or none) for a token with the requested
    /// scopes narrowed to what the policy grants.
    pub fn issue(
        &self,
        authorization: Option<&str>,
        service: Option<&str>,
        scopes: &[String],
        realm: &str,
    ) -> Result<TokenResponse, Denial> {
        let Some(issuer) = &self.tokens else {
            return Err(Denial::Forbidden);
        };
        let user = match self.caller(authorization) {
            Ok(Caller::User(u)) => Some(u),
            Ok(Caller::Anonymous) => None,
            // Tokens are not traded for tokens; wrong passwords are refused outright.
            Ok(Caller::Token(_)) | Err(()) => return Err(self.challenge(None, realm)),
        };
        if service.is_some_and(|s| s != issuer.service()) {
            return Err(Denial::Forbidden);
        }
        let mut access = Vec::new();
        for scope in scopes {
            let Some((repository, wanted)) = parse_scope(scope) else {
                continue;
            };
            let granted = self.policy.granted(user.as_deref(), &repository);
            let actions: BTreeSet<Action> = match wanted {
                None => granted,
                Some(w) => w.intersection(&granted).copied().collect(),
            };
            access.push((repository, actions));
        }
        Ok(issuer.issue(user.as_deref(), &access))
    }

    fn caller(&self, authorization: Option<&str>) -> Result<Caller, ()> {
        let Some(value) = authorization else {
            return Ok(Caller::Anonymous);
        };
        let (scheme, rest) = value.split_once(' ').ok_or(())?;
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| ())?;
            let text = String::from_utf8(raw).map_err(|_| ())?;
            let (user, password) = text.split_once(':').ok_or(())?;
            // Clients without credentials that were challenged for Basic send empty ones
            // (skopeo's `--no-creds` does): that is an anonymous caller, not a wrong password.
            if user.is_empty() && password.is_empty() {
                return Ok(Caller::Anonymous);
            }
            return if self.users.verify(user, password) {
                Ok(Caller::User(user.to_owned()))
            } else {
                Err(())
            };
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let issuer = self.tokens.as_ref().ok_or(())?;
            return issuer.verify(rest.trim()).map(Caller::Token).ok_or(());
        }
        Err(())
    }

    fn granted(&self, caller: &Caller, repository: &str) -> BTreeSet<Action> {
        match caller {
            Caller::Anonymous => self.policy.granted(None, repository),
            Caller::User(u) => self.policy.granted(Some(u), repository),
            Caller::Token(grants) => grants
                .iter()
                .filter(|(r, _)| r == repository)
                .flat_map(|(_, a)| a.iter().copied())
                .collect(),
        }
    }

    fn challenge(&self, scope: Option<(&str, Action)>, realm: &str) -> Denial {
        let challenge = match &self.tokens {
            None => "Basic realm=\"quayside\", charset=\"UTF-8\"".to_owned(),
            Some(issuer) => {
                let mut c = format!("Bearer realm=\"{realm}\",service=\"{}\"", issuer.service());
                if let Some((repository, action)) = scope {
                    // Ask for pull along with push, as clients need both to push.
                    let actions = match action {
                        Action::Pull => "pull",
                        Action::Push => "pull,push",
                        Action::Delete => "delete",
                    };
                    c.push_str(&format!(",scope=\"repository:{repository}:{actions}\""));
                }
                c
            }
        };
        Denial::Unauthenticated { challenge }
    }
}

/// `repository:<name>:<actions>` → (name, `None` for `*` or the actions).
fn parse_scope(scope: &str) -> Option<(String, Option<BTreeSet<Action>>)> {
    let rest = scope.strip_prefix("repository:")?;
    let (name, actions) = rest.rsplit_once(':')?;
    if actions.split(',').any(|a| a == "*") {
        return Some((name.to_owned(), None));
    }
    Some((
        name.to_owned(),
        Some(actions.split(',').filter_map(Action::parse).collect()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: bool) -> Access {
        let users = Htpasswd::parse(&format!(
            "alice:{}\nbob:{}\n",
            bcrypt::hash("a-pw", 4).unwrap(),
            bcrypt::hash("b-pw", 4).unwrap()
        ))
        .unwrap();
        let policy = Policy::parse(
            "anonymous_pull: [\"public/*\"]\nrules:\n  - users: [alice]\n    repositories: [\"*\"]\n    actions: [pull, push, delete]\n  - users: [\"*\"]\n    repositories: [\"team/*\"]\n    actions: [pull]\n",
        )
        .unwrap();
        if token {
            Access::token(
                users,
                policy,
                TokenIssuer::new(
                    b"0123456789abcdef0123456789abcdef".to_vec(),
                    "quayside",
                    300,
                ),
            )
        } else {
            Access::basic(users, policy)
        }
    }

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[test]
    fn basic_mode_decisions() {
        let a = access(false);
        let realm = "http://r/auth/token";
        assert_eq!(
            a.check(Some(&basic("alice", "a-pw")), "team/x", Action::Push, realm),
            Ok(())
        );
        assert_eq!(
            a.check(Some(&basic("bob", "b-pw")), "team/x", Action::Pull, realm),
            Ok(())
        );
        assert_eq!(
            a.check(Some(&basic("bob", "b-pw")), "team/x", Action::Push, realm),
            Err(Denial::Forbidden)
        );
        assert_eq!(a.check(None, "public/web", Action::Pull, realm), Ok(()));
        let Err(Denial::Unauthenticated { challenge }) =
            a.check(None, "team/x", Action::Pull, realm)
        else {
            panic!()
        };
        assert!(challenge.starts_with("Basic realm="));
        assert!(matches!(
            a.check(Some(&basic("bob", "wrong")), "team/x", Action::Pull, realm),
            Err(Denial::Unauthenticated { .. })
        ));
        assert!(a.can_list(Some(&basic("bob", "b-pw")), "team/x"));
        assert!(!a.can_list(Some(&basic("bob", "b-pw")), "private/y"));
    }

    #[test]
    fn tokens_carry_only_granted_scopes() {
        let a = access(true);
        let realm = "http://r/auth/token";
        let Err(Denial::Unauthenticated { challenge }) =
            a.check(None, "team/x", Action::Push, realm)
        else {
            panic!()
        };
        assert_eq!(
            challenge,
            "Bearer realm=\"http://r/auth/token\",service=\"quayside\",scope=\"repository:team/x:pull,push\""
        );
        let t = a
            .issue(
                Some(&basic("bob", "b-pw")),
                Some("quayside"),
                &["repository:team/x:pull,push".into()],
                realm,
            )
            .unwrap();
        let bearer = format!("Bearer {}", t.token);
        assert_eq!(
            a.check(Some(&bearer), "team/x", Action::Pull, realm),
            Ok(())
        );
        assert!(matches!(
            a.check(Some(&bearer), "team/x", Action::Push, realm),
            Err(Denial::Unauthenticated { .. })
        ));
        assert!(matches!(
            a.check(Some(&bearer), "other", Action::Pull, realm),
            Err(Denial::Unauthenticated { .. })
        ));
        // Anonymous tokens get the anonymous grants only.
        let t = a
            .issue(
                None,
                Some("quayside"),
                &["repository:public/web:pull,push".into()],
                realm,
            )
            .unwrap();
        let anon = format!("Bearer {}", t.token);
        assert_eq!(
            a.check(Some(&anon), "public/web", Action::Pull, realm),
            Ok(())
        );
        assert!(
            a.check(Some(&anon), "public/web", Action::Push, realm)
                .is_err()
        );
        assert!(
            a.issue(Some(&basic("bob", "nope")), None, &[], realm)
                .is_err()
        );
        // A token signed with another secret is worthless.
        let other = TokenIssuer::new(b"another secret, also 32 bytes..".to_vec(), "quayside", 300);
        let forged = other.issue(Some("alice"), &[("team/x".into(), [Action::Push].into())]);
        assert!(
            a.check(
                Some(&format!("Bearer {}", forged.token)),
                "team/x",
                Action::Push,
                realm
            )
            .is_err()
        );
    }

    #[test]
    fn token_responses_keep_the_token_out_of_debug() {
        let issuer = TokenIssuer::new(b"0123456789abcdef0123456789abcdef".to_vec(), "registry", 60);
        let response = issuer.issue(Some("alice"), &[]);
        assert!(response.token.len() > 20);
        let debug = format!("{response:?}");
        assert!(!debug.contains(&response.token), "{debug}");
    }
}
