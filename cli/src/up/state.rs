//! The supervisor's state file, `DATA/up.json` (and the bare pid in `DATA/up.pid` for shell
//! scripts): who supervises, which children run, which addresses they listen on. `causeway up`
//! reads it to refuse a second federation on the same data directory; `causeway down` reads it
//! to stop the federation and to check that nothing is left listening.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A child in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildRef {
    /// Its name (`gateway-c1`).
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// An address a child listens on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerRef {
    /// The address.
    pub address: SocketAddr,
    /// What listens there.
    pub what: String,
}

/// The contents of `up.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The supervisor's pid.
    pub pid: u32,
    /// Controller API.
    pub api: SocketAddr,
    /// Controller ADS.
    pub xds: SocketAddr,
    /// Whether everything was Ready.
    pub ready: bool,
    /// Every address of the federation.
    pub listeners: Vec<ListenerRef>,
    /// Every child.
    pub children: Vec<ChildRef>,
}

fn json_path(dir: &Path) -> PathBuf {
    dir.join("up.json")
}

impl State {
    /// The state file of `dir`, if there is a readable one.
    pub fn load(dir: &Path) -> Option<State> {
        let text = std::fs::read_to_string(json_path(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes `up.json` (atomically: a reader never sees half a file) and `up.pid`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("up.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, json_path(dir))?;
        std::fs::write(dir.join("up.pid"), format!("{}\n", self.pid))
    }

    /// Removes the state files (the federation is stopped).
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(json_path(dir));
        let _ = std::fs::remove_file(dir.join("up.pid"));
    }

    /// Every address that answers while the federation runs: the controller's and the
    /// children's.
    pub fn all_addresses(&self) -> Vec<(SocketAddr, String)> {
        let mut out = vec![
            (self.api, "controller API".to_owned()),
            (self.xds, "controller ADS".to_owned()),
        ];
        out.extend(self.listeners.iter().map(|l| (l.address, l.what.clone())));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()), None);
        let s = State {
            pid: 42,
            api: "127.0.0.1:15080".parse().unwrap(),
            xds: "127.0.0.1:15010".parse().unwrap(),
            ready: true,
            listeners: vec![ListenerRef {
                address: "127.0.1.1:8080".parse().unwrap(),
                what: "gateway of c1 (http)".into(),
            }],
            children: vec![ChildRef {
                name: "controller".into(),
                pid: 43,
            }],
        };
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("up.pid")).unwrap(),
            "42\n"
        );
        assert_eq!(s.all_addresses().len(), 3);
        State::remove(dir.path());
        assert_eq!(State::load(dir.path()), None);
    }
}
