//! The agent as the socket server, the metrics port and the run loop share it: absent
//! while the datapath loads, then present; and one readiness that `/readyz`, the socket's
//! Status (so the CNI plugin's STATUS) and the `netkit_agent_ready` gauge all report, so
//! they never disagree.
//!
//! Ready means: the datapath is loaded, the endpoints are reconciled, and the socket
//! serves requests.

use std::sync::{Arc, OnceLock};

use netkit_api::AgentStatus;
use tokio::sync::watch;

use crate::service::Agent;

#[derive(Clone)]
pub struct SharedAgent {
    agent: Arc<OnceLock<Arc<Agent>>>,
    /// `None` when ready, else why not.
    not_ready: Arc<watch::Sender<Option<String>>>,
}

impl SharedAgent {
    /// Not ready yet, for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        SharedAgent {
            agent: Arc::new(OnceLock::new()),
            not_ready: Arc::new(watch::Sender::new(Some(reason.into()))),
        }
    }

    /// The agent, once its datapath is loaded.
    pub fn agent(&self) -> Option<&Arc<Agent>> {
        self.agent.get()
    }

    /// Hand over the loaded agent (once; later calls are ignored).
    pub fn set_agent(&self, agent: Arc<Agent>) {
        let _ = self.agent.set(agent);
    }

    pub fn set_ready(&self) {
        self.not_ready.send_replace(None);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.not_ready.send_replace(Some(reason.into()));
    }

    /// `Err(why)` while not ready.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.not_ready.borrow() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// The agent's status with the process's readiness: the agent alone cannot tell
    /// whether it is still starting or already shutting down.
    pub async fn status(&self) -> AgentStatus {
        let mut status = match self.agent() {
            Some(agent) => agent.status(),
            None => AgentStatus {
                ready: false,
                version: env!("CARGO_PKG_VERSION").to_string(),
                endpoints: 0,
                mapped_addresses: 0,
                translation_check: "unknown: the datapath is not loaded".to_string(),
                pod_cidrs: Vec::new(),
                uplink: None,
                reason: None,
                nodes: None,
                remote_routes: 0,
                releasing: 0,
            },
        };
        let readiness = self.readiness();
        status.ready = readiness.is_ok();
        status.reason = readiness.err();
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_follows_readiness() {
        let shared = SharedAgent::new("loading the datapath");
        let status = shared.status().await;
        assert!(!status.ready);
        assert_eq!(status.reason.as_deref(), Some("loading the datapath"));
        shared.set_ready();
        assert_eq!(shared.readiness(), Ok(()));
        let status = shared.status().await;
        assert!(status.ready && status.reason.is_none());
        shared.set_not_ready("shutting down");
        assert_eq!(shared.readiness(), Err("shutting down".to_string()));
    }
}
