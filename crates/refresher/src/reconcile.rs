//! One namespace at a time: make `<prefix>-<location>` hold the current credential.
//!
//! The secrets cache (a reflector on secrets of that one name, cluster-wide) is what makes this
//! cheap: a namespace whose secret already holds the current credential costs no request, so the
//! periodic resync and the wake-up after every refresh only write where something differs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest as _, Sha256};

use crate::{Config, Error, Shared};

pub const FIELD_MANAGER: &str = "quayside-token-refresher";
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
const DATA_KEY: &str = ".dockerconfigjson";
/// A new namespace's `default` ServiceAccount appears a moment after the namespace.
const SERVICE_ACCOUNT_RETRY: Duration = Duration::from_secs(2);
const CACHE_NOT_READY_RETRY: Duration = Duration::from_millis(200);

pub struct Context {
    pub client: Client,
    pub config: Arc<Config>,
    pub shared: Arc<Shared>,
    pub secrets: Store<Secret>,
    /// Set once the secret watch delivered its first complete list.
    pub secrets_listed: Arc<AtomicBool>,
    /// Namespaces (by uid) whose ServiceAccounts already list the secret.
    pub patched: Mutex<HashSet<String>>,
    /// Consecutive failed reconciles per namespace name, for [`error_policy`]'s back-off.
    pub failures: Mutex<HashMap<String, u32>>,
}

pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_once(&ns, &ctx).await;
    if result.is_ok()
        && let Ok(mut failures) = ctx.failures.lock()
    {
        failures.remove(&ns.name_any());
    }
    result
}

async fn reconcile_once(ns: &Namespace, ctx: &Context) -> Result<Action, Error> {
    let name = ns.name_any();
    let resync = Action::requeue(ctx.config.resync);
    if !ctx.config.selects(&name) || terminating(ns) {
        return Ok(Action::await_change());
    }
    // Never write an expired token; a new credential wakes every namespace.
    let Some(credential) = ctx
        .shared
        .credential()
        .filter(|c| c.is_valid_at(SystemTime::now()))
    else {
        return Ok(Action::await_change());
    };
    let desired = credential.docker_config_json();
    // Until the secret cache has its first full list, "not cached" does not mean "missing": a
    // new leader would otherwise rewrite every namespace's secret. Come back rather than wait,
    // so no reconcile slot is held.
    if !ctx.secrets_listed.load(Ordering::Acquire) {
        return Ok(Action::requeue(CACHE_NOT_READY_RETRY));
    }
    if !holds(ctx, &name, desired.expose().as_bytes()) {
        match write_secret(ctx, &name, desired.expose()).await {
            Ok(()) => {
                ctx.shared.metrics.secrets_written.inc();
                tracing::info!(namespace = %name, secret = %ctx.config.secret_name, "wrote pull secret");
            }
            // The namespace went away or is being deleted between the watch event and now.
            Err(kube::Error::Api(s))
                if s.code == 404 || (s.code == 403 && s.message.contains("terminat")) =>
            {
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if ctx.config.service_accounts.is_empty() {
        return Ok(resync);
    }
    let uid = ns.uid().unwrap_or_default();
    if ctx
        .patched
        .lock()
        .map(|p| p.contains(&uid))
        .unwrap_or(false)
    {
        return Ok(resync);
    }
    match patch_service_accounts(ctx, &name).await {
        Ok(()) => {
            if let Ok(mut p) = ctx.patched.lock() {
                p.insert(uid);
            }
            Ok(resync)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::requeue(SERVICE_ACCOUNT_RETRY)),
        Err(e) => Err(e.into()),
    }
}

/// Retries a failing namespace with back-off (1 s doubling to 5 min, as token fetches), without
/// stopping the others.
pub fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.metrics.error("kube");
    let name = ns.name_any();
    let attempt = ctx.failures.lock().map_or(1, |mut failures| {
        let n = failures.entry(name.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    });
    let wait = crate::schedule::after_failure(attempt);
    tracing::warn!(namespace = %name, %error, attempt, retry_in_s = wait.as_secs(), "writing the pull secret failed; retrying");
    Action::requeue(wait)
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether the cached secret already carries `desired` (compared by digest, see [`slim_secret`]).
fn holds(ctx: &Context, namespace: &str, desired: &[u8]) -> bool {
    let key = ObjectRef::new(&ctx.config.secret_name).within(namespace);
    let digest = Sha256::digest(desired);
    ctx.secrets.get(&key).is_some_and(|s| {
        s.type_.as_deref() == Some(DOCKER_CONFIG_JSON)
            && s.data
                .as_ref()
                .and_then(|d| d.get(DATA_KEY))
                .is_some_and(|v| v.0 == digest.as_slice())
    })
}

/// What the cache keeps of a secret: its type and a SHA-256 of its `.dockerconfigjson`. At
/// 10 000 namespaces the full objects would be most of the process's memory, and the cache would
/// hold 10 000 copies of the token.
pub fn slim_secret(secret: &mut Secret) {
    secret.metadata.managed_fields = None;
    secret.metadata.annotations = None;
    secret.metadata.labels = None;
    let digest = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map(|v| ByteString(Sha256::digest(&v.0).to_vec()));
    secret.data = digest.map(|d| [(DATA_KEY.to_owned(), d)].into());
    secret.string_data = None;
}

/// What the cache keeps of a namespace: name, uid, labels and whether it is being deleted.
pub fn slim_namespace(ns: &mut Namespace) {
    ns.metadata.managed_fields = None;
    ns.metadata.annotations = None;
    ns.metadata.owner_references = None;
    ns.metadata.finalizers = None;
    ns.spec = None;
    if let Some(status) = &mut ns.status {
        status.conditions = None;
    }
}

/// Server-side apply under one field manager: created if missing, updated in place (never
/// deleted and recreated), fields other managers own left alone.
async fn write_secret(
    ctx: &Context,
    namespace: &str,
    docker_config: &str,
) -> Result<(), kube::Error> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(ctx.config.secret_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    FIELD_MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some(DOCKER_CONFIG_JSON.to_owned()),
        data: Some(
            [(
                DATA_KEY.to_owned(),
                ByteString(docker_config.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&ctx.config.secret_name, &params, &Patch::Apply(&secret))
        .await
        .map(drop)
}

/// Adds the secret to each configured ServiceAccount's `imagePullSecrets`. A strategic merge
/// patch merges that list by name: existing entries stay, ours is added once.
async fn patch_service_accounts(ctx: &Context, namespace: &str) -> Result<(), kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({"imagePullSecrets": [{"name": ctx.config.secret_name}]});
    for account in &ctx.config.service_accounts {
        api.patch(account, &PatchParams::default(), &Patch::Strategic(&patch))
            .await?;
    }
    Ok(())
}
