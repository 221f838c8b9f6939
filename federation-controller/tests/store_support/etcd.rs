//! A real etcd for tests: started on 127.0.0.1 with free ports and a temporary data directory,
//! polled until it answers, killed when dropped.
//!
//! The binary is `$CAUSEWAY_ETCD`, else `etcd` on `PATH`, else `/usr/bin/etcd`. When none
//! exists the test fails (it does not skip): run `scripts/install-deps`.

// Shared by several test binaries; each uses part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use causeway_controller::store::etcd::{EtcdOptions, EtcdStore};

/// How long etcd may take to answer after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A running etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
}

/// The etcd binary to run; panics with what to do when there is none.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CAUSEWAY_ETCD") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CAUSEWAY_ETCD={} does not exist; unset it or point it at an etcd binary",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    let path = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.is_file(),
        "no etcd binary found (looked at $CAUSEWAY_ETCD, etcd on PATH, /usr/bin/etcd): the etcd \
         store tests need a real etcd. Run scripts/install-deps (installs Debian etcd-server) or \
         set CAUSEWAY_ETCD to an etcd binary"
    );
    path
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Etcd {
    /// Starts a fresh etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let binary = binary();
        let mut last_error = String::new();
        // A port picked free can be taken by someone else before etcd binds it: try again
        // with new ports.
        for _ in 0..3 {
            let mut etcd = Etcd {
                child: None,
                dir: tempfile::tempdir().unwrap(),
                binary: binary.clone(),
                client_port: free_port(),
                peer_port: free_port(),
            };
            match etcd.launch().await {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A new store client on this etcd.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(EtcdOptions::new([self.endpoint()]))
            .await
            .unwrap()
    }

    /// Stops etcd (SIGKILL, as a crash would) and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.launch().await {
            panic!("etcd did not restart: {e}");
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "{} exited with {status}; its log:\n{}",
                    self.binary.display(),
                    tail(&self.log_path())
                ));
            }
            let options = EtcdOptions {
                connect_timeout: Duration::from_millis(500),
                request_timeout: Duration::from_millis(500),
                ..EtcdOptions::new([self.endpoint()])
            };
            match EtcdStore::connect(options).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    self.kill();
                    return Err(format!(
                        "not ready after {READY_DEADLINE:?}: {e}; its log:\n{}",
                        tail(&self.log_path())
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
