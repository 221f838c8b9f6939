//! `causeway down`: stops what `causeway up` started from a data directory — SIGTERM to the
//! supervisor (which stops its children in order), a kill of whatever is left after the grace
//! time — and confirms that no process of it and no listener on its addresses remain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::up::state::State;

/// Flags of `causeway down`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory `causeway up` ran with.
    #[arg(long, env = "CAUSEWAY_DATA_DIR", default_value = ".causeway")]
    pub data_dir: PathBuf,
    /// How long the federation gets to stop before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = crate::parse_wait)]
    pub timeout: Duration,
}

/// Polls `done` every 50 ms until it holds or `limit` passes; whether it held.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Addresses of the state that still accept connections.
fn still_listening(s: &State) -> Vec<String> {
    s.all_addresses()
        .into_iter()
        .filter(|(a, _)| {
            std::net::TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok()
        })
        .map(|(a, what)| format!("{a} ({what})"))
        .collect()
}

/// Runs `causeway down`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.data_dir;
    let Some(state) = State::load(dir) else {
        println!(
            "nothing to stop: no federation started from {} (no up.json there)",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let alive = |pid: u32| crate::up::procs_alive(pid);
    let children: Vec<_> = state.children.clone();
    if alive(state.pid) {
        println!(
            "stopping the local federation (supervisor pid {})",
            state.pid
        );
        crate::up::send_signal(state.pid, Signal::TERM);
        // The supervisor gives its children their own grace time; wait a bit longer for it.
        if !wait_for(args.timeout, || !alive(state.pid)) {
            println!(
                "the supervisor did not stop within {:?}: killing it and its children",
                args.timeout
            );
            crate::up::send_signal(state.pid, Signal::KILL);
        }
    } else {
        println!(
            "the supervisor (pid {}) is not running; stopping what is left of its children",
            state.pid
        );
    }
    // Children outlive a killed supervisor only for the moment their parent-death signal
    // takes; anything still there after that is stopped here.
    let left = |cs: &[crate::up::state::ChildRef]| -> Vec<String> {
        cs.iter()
            .filter(|c| alive(c.pid))
            .map(|c| format!("{} (pid {})", c.name, c.pid))
            .collect()
    };
    if !wait_for(Duration::from_secs(5), || left(&children).is_empty()) {
        for c in children.iter().filter(|c| alive(c.pid)) {
            crate::up::send_signal(c.pid, Signal::TERM);
        }
        if !wait_for(Duration::from_secs(5), || left(&children).is_empty()) {
            for c in children.iter().filter(|c| alive(c.pid)) {
                crate::up::send_signal(c.pid, Signal::KILL);
            }
            wait_for(Duration::from_secs(2), || left(&children).is_empty());
        }
    }
    let procs = left(&children);
    // Sockets close with their processes; a moment for the kernel, then check every address.
    let mut listening = Vec::new();
    wait_for(Duration::from_secs(2), || {
        listening = still_listening(&state);
        listening.is_empty()
    });
    if procs.is_empty() && listening.is_empty() {
        State::remove(dir);
        println!(
            "stopped: {} processes; nothing listens on the federation's {} addresses",
            children.len() + 1,
            state.all_addresses().len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !procs.is_empty() {
        eprintln!("still running: {}", procs.join(", "));
    }
    if !listening.is_empty() {
        eprintln!(
            "still listening (not necessarily ours any more): {}",
            listening.join(", ")
        );
    }
    Ok(ExitCode::FAILURE)
}
