//! The `quayside` binary as a child process. It is started on `127.0.0.1:0` and the address it
//! bound is read from its JSON start-up log line, so tests never race for ports.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Quayside {
    child: Child,
    pub addr: SocketAddr,
    /// Every log line so far, for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Quayside {
    /// `quayside registry --data-dir <dir> <extra...>` on a free loopback port.
    pub fn registry(bin: &str, data_dir: &Path, extra: &[&str]) -> Quayside {
        Quayside::registry_on(bin, "127.0.0.1:0", data_dir, extra)
    }

    /// The same on a given address.
    pub fn registry_on(bin: &str, listen: &str, data_dir: &Path, extra: &[&str]) -> Quayside {
        let mut args: Vec<String> = [
            "--log-format",
            "json",
            "registry",
            "--listen",
            listen,
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(data_dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Quayside::spawn(bin, &args, "registry serving")
    }

    /// `quayside proxy` on a free loopback port in front of `upstream`.
    pub fn proxy(bin: &str, upstream: SocketAddr, extra: &[&str]) -> Quayside {
        let mut args: Vec<String> = [
            "--log-format",
            "json",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--registry-host",
            &upstream.ip().to_string(),
            "--registry-port",
            &upstream.port().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Quayside::spawn(bin, &args, "proxy serving")
    }

    /// `quayside token-refresher` with the registry-secret in `creds_dir`, its probes on a free
    /// loopback port; `env` carries the location, the kubeconfig and the rest.
    pub fn token_refresher(bin: &str, creds_dir: &Path, env: &[(&str, &str)]) -> Quayside {
        let args: Vec<String> = [
            "--log-format",
            "json",
            "token-refresher",
            "--listen",
            "127.0.0.1:0",
            "--registry-secret-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([creds_dir.display().to_string()])
        .collect();
        Quayside::spawn_env(bin, &args, env, "token refresher started")
    }

    /// Runs `bin args`, waiting for the JSON log line whose message is `ready_message` and whose
    /// `listen` field holds the bound address.
    pub fn spawn(bin: &str, args: &[String], ready_message: &str) -> Quayside {
        Quayside::spawn_env(bin, args, &[], ready_message)
    }

    /// [`Quayside::spawn`] with extra environment variables.
    pub fn spawn_env(
        bin: &str,
        args: &[String],
        env: &[(&str, &str)],
        ready_message: &str,
    ) -> Quayside {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn quayside");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let ready_message = ready_message.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let ready = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == ready_message.as_str())
                    .and_then(|v| v["listen"].as_str()?.parse::<SocketAddr>().ok());
                // Log first: a test that sees the process ready must also see the line.
                sink.lock().expect("log lock").push(line);
                if let Some(addr) = ready {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "quayside did not start: {:?}",
                    log.lock().expect("log lock")
                );
            }
        };
        Quayside { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Peak resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for Quayside {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the process logged, which is usually the why.
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- log of the quayside process on {} ---", self.addr);
            for line in log.iter() {
                eprintln!("{line}");
            }
            eprintln!("--- end of log ---");
        }
    }
}
