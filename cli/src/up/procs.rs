//! The child processes of `causeway up`.
//!
//! Every child runs in a process group of its own, so a Ctrl-C in the terminal reaches only the
//! supervisor, which then stops the children in order. Every child is started through
//! `causeway __exec-child --parent PID -- PROGRAM ARGS`, which asks the kernel to send it
//! SIGTERM when the supervisor dies (PR_SET_PDEATHSIG survives the exec that follows), so not
//! even a `kill -9` of the supervisor leaves gateways or Envoys behind. The children are also
//! killed when their handles drop (a panic) and stopped by SIGTERM on every other exit path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::process::{Pid, Signal};

/// The hidden subcommand that wraps every child.
pub const EXEC_CHILD: &str = "__exec-child";

/// One running child.
pub struct Child {
    /// What it is (`controller`, `gateway-c1`, `demo-shop-c1-v1`, `envoy-c1`).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its log file (standard output and error).
    pub log: PathBuf,
    handle: tokio::process::Child,
}

/// The children of one supervisor, in start order.
pub struct Children {
    list: Vec<Child>,
    exe: PathBuf,
    logs: PathBuf,
}

impl Children {
    /// No children yet; logs go to `logs/NAME.log`.
    pub fn new(logs: &Path) -> anyhow::Result<Children> {
        Ok(Children {
            list: Vec::new(),
            exe: std::env::current_exe().context("finding the causeway binary itself")?,
            logs: logs.to_owned(),
        })
    }

    /// The causeway binary (for children that are causeway subcommands).
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Starts `program args` as child `name`.
    pub fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> anyhow::Result<u32> {
        let log = self.logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg(EXEC_CHILD)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let handle = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = handle.id().unwrap_or_default();
        self.list.push(Child {
            name: name.to_owned(),
            pid,
            log,
            handle,
        });
        Ok(pid)
    }

    /// The first child that has exited, with its status.
    pub fn exited(&mut self) -> Option<(&Child, ExitStatus)> {
        let i = self
            .list
            .iter_mut()
            .position(|c| matches!(c.handle.try_wait(), Ok(Some(_))))?;
        let c = &mut self.list[i];
        let status = c.handle.try_wait().ok().flatten()?;
        Some((&self.list[i], status))
    }

    /// SIGTERM to every child, newest first; waits up to `grace` for all of them, then kills
    /// what is left. Returns the names of the children that had to be killed.
    pub async fn stop_all(&mut self, grace: Duration) -> Vec<String> {
        for c in self.list.iter().rev() {
            if let Some(pid) = i32::try_from(c.pid).ok().and_then(Pid::from_raw) {
                // Already gone is fine: the wait below reaps it.
                let _ = rustix::process::kill_process(pid, Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        for c in self.list.iter_mut().rev() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, c.handle.wait()).await.is_err() {
                let _ = c.handle.start_kill();
                let _ = c.handle.wait().await;
                killed.push(c.name.clone());
            }
        }
        self.list.clear();
        killed
    }
}

/// The last `n` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `causeway __exec-child --parent PID -- PROGRAM ARGS`: arrange to get SIGTERM when the
/// supervisor dies, then become PROGRAM.
pub fn exec_child(parent: u32, argv: Vec<OsString>) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
        .context("PR_SET_PDEATHSIG")?;
    // The supervisor may have died before the line above: then nobody would stop us.
    if rustix::process::getppid().map(Pid::as_raw_pid) != i32::try_from(parent).ok() {
        anyhow::bail!("the supervisor (pid {parent}) is gone; not starting");
    }
    let mut it = argv.into_iter();
    let program = it.next().context("no program to run")?;
    let err = std::process::Command::new(&program).args(it).exec();
    Err(anyhow::anyhow!(
        "cannot run {}: {err}",
        Path::new(&program).display()
    ))
}

/// Whether process `pid` exists and is a causeway or Envoy process (not a reused pid).
pub fn alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    // A zombie has not released its sockets' owner yet but runs nothing: count it as gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("causeway") || cmdline.contains("envoy")
}

/// Sends `sig` to `pid`; false when there is no such process.
pub fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, sig).is_ok())
}
