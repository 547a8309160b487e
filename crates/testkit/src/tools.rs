//! The real clients and peers the tests drive: skopeo, containerd's `ctr` (with a private
//! containerd daemon), and Debian's `docker-registry` (CNCF distribution). The test command
//! installs them; a missing one fails the test rather than skipping it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (the test command installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// skopeo with a private policy that accepts unsigned images and plain HTTP to loopback.
pub struct Skopeo {
    dir: TempDir,
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("policy");
        Skopeo { dir }
    }

    /// `skopeo copy from to`, with plain HTTP allowed on whichever side is a registry
    /// (`docker://…`); panics if it fails.
    pub fn copy(&self, from: &str, to: &str) {
        self.copy_with(&[], from, to);
    }

    /// The same for every platform of an index (`--all`).
    pub fn copy_all(&self, from: &str, to: &str) {
        self.copy_with(&["--all"], from, to);
    }

    fn copy_with(&self, extra: &[&str], from: &str, to: &str) {
        let mut args = vec!["copy"];
        args.extend_from_slice(extra);
        if from.starts_with("docker://") {
            args.push("--src-tls-verify=false");
        }
        if to.starts_with("docker://") {
            args.push("--dest-tls-verify=false");
        }
        args.extend([from, to]);
        self.run(&args);
    }

    /// `skopeo copy` of the OCI layout's `v1` to `docker://reference` as `creds`
    /// (`user:password`; None sends none), whatever its outcome.
    pub fn try_push_layout(&self, layout: &Path, reference: &str, creds: Option<&str>) -> Output {
        let source = format!("oci:{}:v1", layout.display());
        let dest = format!("docker://{reference}");
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        match creds {
            Some(c) => args.extend(["--dest-creds", c]),
            None => args.push("--dest-no-creds"),
        }
        args.extend([source.as_str(), dest.as_str()]);
        self.try_run(&args)
    }

    /// `skopeo inspect docker://reference` as `creds` (None sends none), whatever its outcome.
    pub fn try_inspect(&self, reference: &str, creds: Option<&str>) -> Output {
        let target = format!("docker://{reference}");
        let mut args = vec!["inspect", "--tls-verify=false"];
        match creds {
            Some(c) => args.extend(["--creds", c]),
            None => args.push("--no-creds"),
        }
        args.push(&target);
        self.try_run(&args)
    }

    /// Runs `skopeo <args>` whatever its outcome (for refusals a test expects).
    pub fn try_run(&self, args: &[&str]) -> Output {
        let policy = self.dir.path().join("policy.json");
        Command::new("skopeo")
            .arg("--policy")
            .arg(policy)
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .output()
            .expect("run skopeo (the test command installs it)")
    }

    /// Runs `skopeo <args>` and returns its stdout; panics with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let policy = self.dir.path().join("policy.json");
        let out = run(Command::new("skopeo")
            .arg("--policy")
            .arg(policy)
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A containerd daemon of our own: root, state and socket under a temporary directory.
pub struct Containerd {
    child: Child,
    dir: TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
            p.join("root").display(),
            p.join("state").display(),
            p.join("c.sock").display()
        );
        std::fs::write(p.join("config.toml"), config).expect("config");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn containerd (the test command installs it)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("containerd successfully booted") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("containerd did not boot");
        }
        Containerd { child, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// Runs `ctr -a <socket> <args>`; panics with its output if it fails.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = run(Command::new("ctr").arg("-a").arg(self.socket()).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pulls the linux/amd64 image `reference` over plain HTTP, as `user:password` if given.
    pub fn pull(&self, reference: &str, user: Option<&str>) {
        let mut args = vec![
            "images",
            "pull",
            "--plain-http",
            "--platform",
            "linux/amd64",
        ];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.push(reference);
        self.ctr(&args);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's `docker-registry` (CNCF distribution 2.8) serving `root` on `addr`.
pub struct Distribution {
    child: Child,
    pub addr: SocketAddr,
    _config: TempDir,
}

impl Distribution {
    /// Serves `root` on a free loopback port, ready once it accepts connections.
    pub fn start(root: &Path) -> Distribution {
        Distribution::start_with_storage(&format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            root.display()
        ))
    }

    /// Runs with `config` (a whole config.yml without its `http` section) on a free port.
    /// distribution cannot be told to bind port 0 and report it, so a port free a moment ago is
    /// tried, and another if it turns out taken (distribution exits, or something else answers).
    pub fn start_with_storage(config_yml: &str) -> Distribution {
        for _ in 0..5 {
            if let Some(peer) = Distribution::try_start(config_yml, free_loopback_addr()) {
                return peer;
            }
        }
        panic!("docker-registry did not start on any of 5 free ports");
    }

    fn try_start(config_yml: &str, addr: SocketAddr) -> Option<Distribution> {
        let config = tempfile::tempdir().expect("tempdir");
        let yml = format!("{config_yml}http:\n  addr: {addr}\n");
        std::fs::write(config.path().join("config.yml"), yml).expect("config");
        let child = Command::new("docker-registry")
            // Its AWS SDK (Go, v1) panics on a CA bundle it cannot attach to its transport.
            .env_remove("AWS_CA_BUNDLE")
            .arg("serve")
            .arg(config.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry (the test command installs it)");
        let mut peer = Distribution {
            child,
            addr,
            _config: config,
        };
        // distribution logs nothing machine-readable about readiness: ask until it answers as
        // distribution does, or exits (dropping `peer` kills it).
        for _ in 0..300 {
            if peer.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            if let Some(answer) = ping(addr) {
                let ours = answer
                    .to_ascii_lowercase()
                    .contains("docker-distribution-api-version");
                return ours.then_some(peer);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `GET /v2/` over a plain connection: the response head, or `None` when nothing listens.
fn ping(addr: SocketAddr) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head[..n]).into_owned())
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free at the time of asking (for peers that cannot bind port 0 and report it).
pub fn free_loopback_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A moto S3 server owned by one test (for tests that stop and restart storage).
pub struct Moto {
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// Python run instead of `moto_server` (same arguments), to change one of moto's answers.
    launcher: Option<&'static str>,
    pub addr: SocketAddr,
}

/// moto with one answer changed: ECR's GetAuthorizationToken says its token expires
/// `QUAYSIDE_MOTO_ECR_TTL` seconds from now, as the real service does (12 hours), where moto
/// answers 1 January 2015 and so every honest consumer refuses the token. The rest of the
/// answer (token `AWS:<account>-auth-token`, proxyEndpoint) is moto's own.
const MOTO_ECR_FUTURE_TOKENS: &str = r#"
import os, sys, time
from moto.ecr.responses import ECRResponse

original = ECRResponse.get_authorization_token
ttl = float(os.environ["QUAYSIDE_MOTO_ECR_TTL"])

def get_authorization_token(self):
    result = original(self)
    for data in result.result["authorizationData"]:
        data["expiresAt"] = time.time() + ttl
    return result

ECRResponse.get_authorization_token = get_authorization_token
from moto.server import main
main(sys.argv[1:])
"#;

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// With moto settings, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to check every signature.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        Moto::launch(env, None)
    }

    /// moto whose ECR tokens expire `ttl` from now (moto's own say 2015).
    pub fn with_ecr_tokens_expiring_in(ttl: Duration) -> Moto {
        let ttl = ttl.as_secs().to_string();
        Moto::launch(
            &[("QUAYSIDE_MOTO_ECR_TTL", &ttl)],
            Some(MOTO_ECR_FUTURE_TOKENS),
        )
    }

    fn launch(env: &[(&str, &str)], launcher: Option<&'static str>) -> Moto {
        let mut moto = Moto {
            child: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            launcher,
            // Port 0: moto binds a free port itself and says which (no port is guessed).
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        moto.restart();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server: storage becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address (empty: moto keeps data in memory); the first start
    /// learns the port moto bound from its `Running on http://…` line.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = match self.launcher {
            None => Command::new("moto_server"),
            Some(script) => {
                let mut python = Command::new("python3");
                python.args(["-c", script]);
                python
            }
        };
        let mut child = command
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn moto_server (the test command installs it)");
        let stderr = child.stderr.take().expect("piped stderr");
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address, then keeps draining: moto logs every request to stderr.
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("Running on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        let announced = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("moto did not say where it listens"));
        self.addr = announced
            .parse()
            .unwrap_or_else(|_| panic!("moto announced {announced:?}"));
        for _ in 0..300 {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("moto did not start on {}", self.addr);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
