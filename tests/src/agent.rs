//! The agent under test: a real `netkit-agent run` in a given network namespace with its
//! own socket, bpffs pin root and state directory, so agents run side by side. Killed on
//! Drop; its pins are removed with the [`BpfDir`] that owns them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bins;
use crate::netns::{BpfDir, Netns, wait_until};

/// Where an agent keeps things; owned by the test so a restarted agent finds them again.
pub struct AgentDirs {
    pub bpffs: BpfDir,
    pub tmp: tempfile::TempDir,
}

impl AgentDirs {
    pub fn new(tag: &str) -> AgentDirs {
        AgentDirs {
            bpffs: BpfDir::new(tag),
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.tmp.path().join("agent.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    pub fn log(&self) -> PathBuf {
        self.tmp.path().join("agent.log")
    }
}

pub struct Agent {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Start `netkit-agent run` inside `ns` with `extra` arguments (`--uplink`, `--pod-cidr`
    /// …) and wait until it answers `status`.
    pub fn start(ns: &Netns, dirs: &AgentDirs, extra: &[&str]) -> Agent {
        Agent::spawn(ns.command(bins::agent()), dirs, extra)
    }

    /// [`Agent::start`] in the test process's own network namespace (the host's root
    /// namespace, e.g. where `ctr run --cni` runs the CNI plugins). Pass `--no-uplink` in
    /// `extra` unless the test means to attach to a host device.
    pub fn start_here(dirs: &AgentDirs, extra: &[&str]) -> Agent {
        Agent::spawn(Command::new(bins::agent()), dirs, extra)
    }

    /// `netkit-agent run` with this agent's socket, pin root and state directory, plus
    /// `extra`, to be run by `cmd` (a Command for the agent binary, in some netns).
    pub fn run_args<'a>(cmd: &'a mut Command, dirs: &AgentDirs, extra: &[&str]) -> &'a mut Command {
        cmd.arg("run")
            .arg("--socket")
            .arg(dirs.socket())
            .arg("--bpffs-root")
            .arg(dirs.bpffs.path())
            .arg("--state-dir")
            .arg(dirs.state_dir())
            .args(extra)
    }

    /// Start the agent from `cmd` (a Command for the agent binary, with whatever
    /// namespace or environment the caller gave it) and wait until it answers.
    pub fn spawn(mut cmd: Command, dirs: &AgentDirs, extra: &[&str]) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dirs.log())
            .expect("agent log file");
        Agent::run_args(&mut cmd, dirs, extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = cmd.spawn().expect("spawning netkit-agent");
        let mut agent = Agent {
            child: Some(child),
            socket: dirs.socket(),
            log: dirs.log(),
        };
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(child) = agent.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "netkit-agent exited with {status} before it was ready:\n{}",
                    agent.log_text()
                );
            }
            agent.cli(&["status"]).status.success()
        });
        assert!(
            ready,
            "netkit-agent not ready after 20 s:\n{}",
            agent.log_text()
        );
        agent
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run a CLI subcommand against this agent.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bins::agent())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("running netkit-agent CLI")
    }

    /// The datapath counters by name (`netkit-agent stats --json`).
    pub fn stats(&self) -> serde_json::Map<String, serde_json::Value> {
        let out = self.cli(&["stats", "--json"]);
        assert!(
            out.status.success(),
            "stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats --json is a JSON object")
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats()
            .get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// Wait until no deleted endpoint's teardown is under way (a DEL with built-in IPAM
    /// returns before the agent has deleted the link; see `status`'s `releasing`).
    pub fn wait_for_teardowns(&self) {
        let status = || -> serde_json::Value {
            serde_json::from_slice(&self.cli(&["status", "--json"]).stdout).unwrap_or_default()
        };
        let done = crate::netns::wait_until(std::time::Duration::from_secs(20), || {
            status()["releasing"].as_u64() == Some(0)
        });
        assert!(
            done,
            "teardowns still under way after 20 s: {}\n{}",
            status(),
            self.log_text()
        );
    }

    /// The endpoints (`netkit-agent endpoints --json`).
    pub fn endpoints(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["endpoints", "--json"]);
        assert!(
            out.status.success(),
            "endpoints failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("endpoints --json is a JSON array")
    }

    /// SIGTERM and wait: the agent exits leaving its pins (the datapath keeps running).
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGKILL and wait: a crash, with no chance to clean anything up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let exited = wait_until(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}
