//! One file per CNI command. Each handler is the plugin's decision logic, written
//! against the seams in [`Ctx`] (kernel, agent, delegated plugins, deletion queue) so
//! it runs unchanged against fakes in unit tests.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;

use netkit_api::EndpointId;
use serde_json::{Value, json};

use crate::agent::AgentApi;
use crate::delqueue::DeletionQueue;
use crate::error::Error;
use crate::ipam::{Delegate, PluginExec};
use crate::netlink::Kernel;
use crate::spec::config::NetConf;
use crate::spec::env::{Command, Invocation};
use crate::spec::version::Version;

/// Everything a command works with.
pub struct Ctx<'a> {
    pub inv: &'a Invocation,
    pub conf: &'a NetConf,
    /// The configuration exactly as received: delegated plugins get it unchanged.
    pub stdin: &'a [u8],
    pub kernel: &'a mut dyn Kernel,
    pub agent: &'a dyn AgentApi,
    pub exec: &'a dyn PluginExec,
    pub queue: &'a DeletionQueue,
}

impl Ctx<'_> {
    pub fn endpoint_id(&self) -> EndpointId {
        EndpointId {
            container_id: self.inv.container_id.clone(),
            ifname: self.inv.ifname.clone(),
        }
    }

    /// The delegated IPAM plugin, when the configuration names one.
    pub fn delegate(&self) -> Option<Delegate<'_>> {
        self.conf.ipam.as_ref().map(|ipam| Delegate {
            plugin: &ipam.plugin,
            exec: self.exec,
            inv: self.inv,
            stdin: self.stdin,
        })
    }

    /// Replay deletions queued while the agent was away. Best effort: a failure here
    /// must not fail the command that happens to find the queue.
    pub fn flush_deletion_queue(&self) {
        if let Err(e) = self.queue.flush(self.agent) {
            tracing::warn!(error = %e, "cannot replay the deletion queue");
        }
    }
}

/// Run the invocation's command; the document to print, if any.
pub fn dispatch(ctx: &mut Ctx<'_>) -> Result<Option<Value>, Error> {
    match ctx.inv.command {
        Command::Add => add::add(ctx).map(|result| Some(result.to_value(ctx.conf.cni_version))),
        Command::Del => del::del(ctx).map(|()| None),
        Command::Check => check::check(ctx).map(|()| None),
        Command::Status => status::status(ctx).map(|()| None),
        Command::Gc => gc::gc(ctx).map(|()| None),
        Command::Version => Ok(Some(version_document(Some(ctx.conf.cni_version.as_str())))),
    }
}

/// The VERSION answer: `cniVersion` echoes the input's (the latest when there is
/// none), `supportedVersions` lists ours.
pub fn version_document(requested: Option<&str>) -> Value {
    json!({
        "cniVersion": requested.unwrap_or(Version::LATEST.as_str()),
        "supportedVersions": Version::supported_strings(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_echoes_the_request() {
        let doc = version_document(Some("0.4.0"));
        assert_eq!(doc["cniVersion"], "0.4.0");
        assert_eq!(doc["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
        assert_eq!(version_document(None)["cniVersion"], "1.1.0");
    }
}
