//! Delegated IPAM: the plugin named by `ipam.type`, found in `CNI_PATH` and run as
//! libcni runs plugins — this process's environment with `CNI_COMMAND` replaced, the
//! complete network configuration we received on stdin, its stderr passed through to
//! ours, its stdout parsed as a result or an error document.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::spec::env::{Command, Invocation};
use crate::spec::error::CniError;
use crate::spec::result::{CniResult, ResultError};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("CNI_PATH is not set; it is needed to find the IPAM plugin {plugin:?}")]
    NoCniPath { plugin: String },
    #[error("IPAM plugin {plugin:?} not found in CNI_PATH={path}")]
    NotFound { plugin: String, path: String },
    #[error("cannot run IPAM plugin {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("IPAM plugin {plugin} {command} failed: {}", error.msg)]
    Plugin {
        plugin: String,
        command: Command,
        error: CniError,
    },
    #[error("IPAM plugin {plugin} {command} failed ({status}) without an error document")]
    Failed {
        plugin: String,
        command: Command,
        status: String,
    },
    #[error(transparent)]
    BadResult(#[from] ResultError),
    #[error("IPAM plugin {plugin} returned no addresses")]
    NoAddresses { plugin: String },
}

/// Runs delegated plugins; a fake in unit tests.
pub trait PluginExec {
    /// Run `plugin` for `command`; the stdout of a successful run.
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        inv: &Invocation,
        stdin: &[u8],
    ) -> Result<Vec<u8>, IpamError>;
}

/// Real processes.
pub struct ProcessExec;

impl PluginExec for ProcessExec {
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        inv: &Invocation,
        stdin: &[u8],
    ) -> Result<Vec<u8>, IpamError> {
        let cni_path = inv
            .cni_path
            .as_deref()
            .ok_or_else(|| IpamError::NoCniPath {
                plugin: plugin.to_string(),
            })?;
        let path = find_in_path(plugin, cni_path).ok_or_else(|| IpamError::NotFound {
            plugin: plugin.to_string(),
            path: cni_path.to_string(),
        })?;
        let spawn_error = |source| IpamError::Spawn {
            path: path.clone(),
            source,
        };
        let mut child = std::process::Command::new(&path)
            .env(crate::spec::env::COMMAND, command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(spawn_error)?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin may exit without reading stdin; its exit status tells the story.
            let _ = input.write_all(stdin);
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(match CniError::from_plugin_output(&output.stdout) {
            Some(error) => IpamError::Plugin {
                plugin: plugin.to_string(),
                command,
                error,
            },
            None => IpamError::Failed {
                plugin: plugin.to_string(),
                command,
                status: output.status.to_string(),
            },
        })
    }
}

/// The first regular file named `plugin` in the `:`-separated `cni_path`.
pub fn find_in_path(plugin: &str, cni_path: &str) -> Option<PathBuf> {
    cni_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(plugin))
        .find(|candidate| candidate.is_file())
}

/// The configured IPAM plugin, ready to run for this invocation.
pub struct Delegate<'a> {
    pub plugin: &'a str,
    pub exec: &'a dyn PluginExec,
    pub inv: &'a Invocation,
    pub stdin: &'a [u8],
}

impl Delegate<'_> {
    fn run(&self, command: Command) -> Result<Vec<u8>, IpamError> {
        tracing::debug!(plugin = self.plugin, %command, "running the IPAM plugin");
        self.exec.exec(self.plugin, command, self.inv, self.stdin)
    }

    /// Allocate: the abbreviated result, with at least one address.
    pub fn add(&self) -> Result<CniResult, IpamError> {
        let stdout = self.run(Command::Add)?;
        let what = format!("IPAM plugin {} result", self.plugin);
        let value: serde_json::Value =
            serde_json::from_slice(&stdout).map_err(|e| ResultError {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        let result = CniResult::from_value(&value, &what)?;
        if result.ips.is_empty() {
            return Err(IpamError::NoAddresses {
                plugin: self.plugin.to_string(),
            });
        }
        Ok(result)
    }

    pub fn del(&self) -> Result<(), IpamError> {
        self.run(Command::Del).map(drop)
    }

    pub fn check(&self) -> Result<(), IpamError> {
        self.run(Command::Check).map(drop)
    }

    pub fn status(&self) -> Result<(), IpamError> {
        self.run(Command::Status).map(drop)
    }

    pub fn gc(&self) -> Result<(), IpamError> {
        self.run(Command::Gc).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn inv(cni_path: Option<String>) -> Invocation {
        Invocation {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: String::new(),
            cni_path,
        }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn plugins_are_found_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "ipam", "true");
        let path = format!("{}::{}", a.path().display(), b.path().display());
        assert_eq!(find_in_path("ipam", &path), Some(b.path().join("ipam")));
        script(a.path(), "ipam", "true");
        assert_eq!(find_in_path("ipam", &path), Some(a.path().join("ipam")));
        assert_eq!(find_in_path("other", &path), None);
    }

    #[test]
    fn the_plugin_gets_our_stdin_and_its_command() {
        let dir = tempfile::tempdir().unwrap();
        // Echo the command and stdin back as an IPAM result.
        script(
            dir.path(),
            "ipam",
            r#"read -r line; echo "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.1.0.2/24\"}],\"dns\":{\"domain\":\"$CNI_COMMAND-$line\"}}""#,
        );
        let inv = inv(Some(dir.path().display().to_string()));
        let d = Delegate {
            plugin: "ipam",
            exec: &ProcessExec,
            inv: &inv,
            stdin: b"x\n",
        };
        let result = d.add().unwrap();
        assert_eq!(result.dns.domain.as_deref(), Some("ADD-x"));
        assert_eq!(result.ips[0].address.to_string(), "10.1.0.2/24");
    }

    #[test]
    fn plugin_errors_keep_their_code() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "ipam",
            r#"echo '{"code": 7, "msg": "bad subnet", "details": "10.0.0.0/33"}'; exit 1"#,
        );
        script(dir.path(), "silent", "exit 3");
        let inv = inv(Some(dir.path().display().to_string()));
        let d = Delegate {
            plugin: "ipam",
            exec: &ProcessExec,
            inv: &inv,
            stdin: b"{}",
        };
        match d.del().unwrap_err() {
            IpamError::Plugin {
                error,
                command: Command::Del,
                ..
            } => {
                assert_eq!(error.code, 7);
                assert_eq!(error.details.as_deref(), Some("10.0.0.0/33"));
            }
            other => panic!("{other}"),
        }
        let d = Delegate {
            plugin: "silent",
            ..d
        };
        assert!(matches!(d.status().unwrap_err(), IpamError::Failed { .. }));
    }

    #[test]
    fn missing_path_or_plugin_are_told_apart() {
        let no_path = inv(None);
        let d = Delegate {
            plugin: "host-local",
            exec: &ProcessExec,
            inv: &no_path,
            stdin: b"{}",
        };
        assert!(matches!(d.add().unwrap_err(), IpamError::NoCniPath { .. }));
        let empty = tempfile::tempdir().unwrap();
        let with_path = inv(Some(empty.path().display().to_string()));
        let d = Delegate {
            inv: &with_path,
            ..d
        };
        assert!(matches!(d.add().unwrap_err(), IpamError::NotFound { .. }));
    }

    #[test]
    fn an_empty_allocation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "ipam", r#"echo '{"cniVersion":"1.0.0"}'"#);
        let inv = inv(Some(dir.path().display().to_string()));
        let d = Delegate {
            plugin: "ipam",
            exec: &ProcessExec,
            inv: &inv,
            stdin: b"{}",
        };
        assert!(matches!(
            d.add().unwrap_err(),
            IpamError::NoAddresses { .. }
        ));
    }
}
