//! netkit-cni: the CNI plugin that wires a pod with a netkit pair (veth where the kernel
//! has no netkit) and hands it to `netkit-agent`.
//!
//! Where things are:
//! - [`spec`]: the CNI protocol (environment, configuration, results, errors, versions);
//! - [`cmd`]: what each command does, against the seams below;
//! - [`connector`]: where the pod's link pair is made (one file per link mode);
//! - [`netlink`]: the kernel seam (trait, rtnetlink implementation, netns handling);
//! - [`agent`] and [`delqueue`]: the hand-off to the agent, and DELs queued while it is away;
//! - [`ipam`]: built-in (agent) and delegated (CNI plugin) address management;
//! - [`error`]: every failure and its CNI error code, in one place;
//! - [`fault`]: the fault points the fault-injection tests kill the plugin at.

pub mod agent;
pub mod cmd;
pub mod connector;
pub mod delqueue;
pub mod error;
pub mod fault;
pub mod ipam;
pub mod lock;
pub mod logging;
pub mod netlink;
pub mod spec;
#[cfg(test)]
mod testing;

use std::io::Read;
use std::time::Instant;

use crate::agent::SocketAgent;
use crate::cmd::Ctx;
use crate::delqueue::DeletionQueue;
use crate::error::Error;
use crate::ipam::ProcessExec;
use crate::netlink::rtnl::RtKernel;
use crate::spec::config::{self, NetConf};
use crate::spec::env::{Command, Invocation};
use crate::spec::version::{self, Version};

/// What the process prints on stdout and whether it exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Option<String>,
    pub success: bool,
}

/// Run one invocation: `env` reads the `CNI_*` variables, `stdin` holds the
/// configuration. Never panics on input; every failure becomes an error document.
pub fn run<V: Into<std::ffi::OsString>>(
    env: impl Fn(&str) -> Option<V>,
    stdin: &mut dyn Read,
) -> Outcome {
    let mut input = Vec::new();
    let read = config::read_config(stdin, &mut input);
    let fail = |e: Error| {
        let requested = config::requested_version(&input);
        let answer_in = requested
            .as_deref()
            .and_then(Version::parse)
            .unwrap_or(Version::LATEST);
        Outcome {
            stdout: Some(e.to_cni().to_json(answer_in.as_str()).to_string()),
            success: false,
        }
    };

    let inv = match Invocation::from_env(|name| env(name).map(Into::into)) {
        Ok(inv) => inv,
        Err(e) => return fail(e.into()),
    };
    if inv.command == Command::Version {
        // No configuration to validate; stdin only tells which version to answer in.
        let doc = cmd::version_document(config::requested_version(&input).as_deref());
        return Outcome {
            stdout: Some(doc.to_string()),
            success: true,
        };
    }
    if let Err(e) = read {
        return fail(Error::Stdin(e));
    }
    let conf = match NetConf::parse(&input) {
        Ok(conf) => conf,
        Err(e) => return fail(e.into()),
    };
    if let Err(e) = version::require(inv.command, conf.cni_version) {
        return fail(e.into());
    }

    logging::init(&conf);
    let _span = tracing::info_span!("cni", command = %inv.command, container = %inv.container_id, ifname = %inv.ifname)
        .entered();
    let started = Instant::now();
    let result = execute(&inv, &conf, &input);
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(doc) => {
            tracing::info!(elapsed_ms, "done");
            Outcome {
                stdout: doc.map(|d| d.to_string()),
                success: true,
            }
        }
        Err(e) => {
            tracing::error!(elapsed_ms, code = e.code(), error = %e, "failed");
            fail(e)
        }
    }
}

/// Build the real seams and dispatch.
fn execute(
    inv: &Invocation,
    conf: &NetConf,
    input: &[u8],
) -> Result<Option<serde_json::Value>, Error> {
    // ADD, DEL and CHECK of one attachment never interleave (see `lock`).
    let _lock = match inv.command {
        Command::Add | Command::Del | Command::Check => {
            let id = netkit_api::EndpointId::new(inv.container_id.clone(), inv.ifname.clone());
            Some(lock::lock(&conf.state_dir, &id)?)
        }
        Command::Status | Command::Gc | Command::Version => None,
    };
    let mut kernel = RtKernel::new()?;
    let agent = SocketAgent::new(&conf.agent_socket);
    let queue = DeletionQueue::new(&conf.state_dir);
    let mut ctx = Ctx {
        inv,
        conf,
        stdin: input,
        kernel: &mut kernel,
        agent: &agent,
        exec: &ProcessExec,
        queue: &queue,
    };
    cmd::dispatch(&mut ctx)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;

    fn invoke(vars: &[(&str, &str)], stdin: &str) -> (Value, bool) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = run(|k| map.get(k).cloned(), &mut stdin.as_bytes());
        let doc = out
            .stdout
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or(Value::Null);
        (doc, out.success)
    }

    #[test]
    fn version_answers_without_a_configuration() {
        let (doc, ok) = invoke(&[("CNI_COMMAND", "VERSION")], "");
        assert!(ok);
        assert_eq!(doc["cniVersion"], "1.1.0");
        assert_eq!(
            doc["supportedVersions"],
            serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
        );
        let (doc, _) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion": "1.0.0"}"#);
        assert_eq!(doc["cniVersion"], "1.0.0");
    }

    #[test]
    fn environment_errors_are_code_4_in_the_requested_version() {
        let (doc, ok) = invoke(
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion": "0.4.0", "name": "n"}"#,
        );
        assert!(!ok);
        assert_eq!(doc["code"], 4);
        assert_eq!(doc["cniVersion"], "0.4.0");
        assert!(doc["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
        let (doc, _) = invoke(&[], "{}");
        assert_eq!(
            (doc["code"].as_u64(), doc["cniVersion"].as_str()),
            (Some(4), Some("1.1.0"))
        );
    }

    #[test]
    fn configuration_errors_get_their_codes() {
        let del = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(invoke(&del, "{not json").0["code"], 6);
        assert_eq!(
            invoke(&del, r#"{"cniVersion": "0.3.1", "name": "n"}"#).0["code"],
            1
        );
        let (doc, _) = invoke(&del, r#"{"cniVersion": "1.0.0", "name": "n", "mtu": 10}"#);
        assert_eq!(doc["code"], 7);
        assert!(doc["msg"].as_str().unwrap().contains("mtu"));
    }

    #[test]
    fn status_and_gc_need_a_1_1_0_configuration() {
        for cmd in ["STATUS", "GC"] {
            let (doc, ok) = invoke(
                &[("CNI_COMMAND", cmd)],
                r#"{"cniVersion": "1.0.0", "name": "n"}"#,
            );
            assert!(!ok);
            assert_eq!(doc["code"], 1, "{cmd}");
            assert_eq!(doc["cniVersion"], "1.0.0");
        }
    }
}
