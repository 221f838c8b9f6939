//! Helpers shared by the end-to-end tests in this directory (each test file is its own crate
//! and includes this module with `mod support;`).
#![allow(dead_code)]

use std::process::Child;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// A child process killed (and reaped) on every exit path.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `causeway` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_causeway")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository root (the CLI is run from there, so `deploy/...` paths resolve).
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} has no parent", env!("CARGO_MANIFEST_DIR")))
}

/// A running `causeway controller` on a free API port of 127.0.0.1, killed on drop.
pub struct Controller {
    /// The process.
    pub child: Guard,
    /// Its API, as it reported it (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its `--data-dir` (store, token).
    pub data_dir: std::path::PathBuf,
    /// Its ADS port when the test chose one (0 when it listens on any free port).
    pub xds: u16,
}

impl Controller {
    /// Starts a controller with its ADS on `127.0.0.1:xds` (0: any free port).
    pub fn start(data_dir: &std::path::Path, xds: u16) -> Controller {
        Controller::start_with(data_dir, &["--xds-listen", &format!("127.0.0.1:{xds}")])
    }

    /// Starts a controller with `extra` arguments (ADS on a free port unless they name
    /// `--xds-listen`: tests run in parallel) and waits until it reports its API address.
    pub fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Controller {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin())
            .args(["controller", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(if extra.contains(&"--xds-listen") {
                &[][..]
            } else {
                &["--xds-listen", "127.0.0.1:0"][..]
            })
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin()));
        let stderr = child.stderr.take();
        let child = Guard(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line
                    .find("http://")
                    .and_then(|i| line[i..].split_whitespace().next())
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the controller did not report its address within 20 s"));
        let xds = extra
            .iter()
            .position(|a| *a == "--xds-listen")
            .and_then(|i| extra.get(i + 1))
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map_or(0, |a| a.port());
        Controller {
            child,
            url,
            data_dir: data_dir.to_owned(),
            xds,
        }
    }

    /// Runs `causeway ARGS` against this controller, from the repository root.
    pub fn causeway(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(bin())
            .args(args)
            .env("CAUSEWAY_SERVER", &self.url)
            .env("CAUSEWAY_DATA_DIR", &self.data_dir)
            .env_remove("CAUSEWAY_TOKEN")
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin()))
    }

    /// Writes `yaml` to `dir/name` and applies it; fails the test when apply fails.
    pub fn apply(&self, dir: &std::path::Path, name: &str, yaml: &str) {
        let file = dir.join(name);
        let file = file.as_path();
        std::fs::write(file, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        let out = self.causeway(&["apply", "-f", &file.to_string_lossy()]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// `causeway get ARGS -o json` (`Null` when it fails).
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.causeway(&a);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// `causeway status --proxies -o json` (`Null` when it fails).
    pub fn proxies(&self) -> serde_json::Value {
        let out = self.causeway(&["status", "--proxies", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }
}
