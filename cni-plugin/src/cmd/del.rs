//! DEL: idempotent, from `CNI_CONTAINERID` + `CNI_IFNAME` alone (no netns, no
//! `prevResult` needed): the host link found by its derived name (the pod end goes
//! with it), the agent endpoint (queued when the agent is away), the delegated IPAM
//! release. Every part is attempted; the first failure is reported with the others.
//!
//! With built-in IPAM the agent owns the addresses, so it can own the teardown too: the
//! endpoint and its link are handed over in one request, answered as soon as the agent
//! has durably taken the endpoint out of service. Deleting a device whose programs are
//! attached waits for an RCU grace period under the rtnl lock; the agent pays that after
//! the DEL has returned, and holds the addresses until it has (see the agent's
//! `release_endpoint`). A delegated IPAM plugin's release cannot wait for that, so with
//! one the teardown stays here, in the order below, before the release.
//!
//! The link goes first. Deleting the device detaches its BPF links as part of the
//! device's own teardown, leaving the agent's pinned links defunct, and releasing a
//! defunct link costs nothing. The other order — the agent releasing live links, then the
//! device going — pays an RCU grace period per link under the rtnl lock, which the next
//! netlink request of every CNI invocation on the node then waits for. Until the agent
//! has removed the endpoint its addresses stay allocated, so none is handed out while
//! anything still refers to it.

use netkit_api::EndpointId;

use super::Ctx;
use crate::agent;
use crate::connector;
use crate::error::Error;
use crate::netlink::{Link, Ns};

pub fn del(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    ctx.flush_deletion_queue();
    let id = ctx.endpoint_id();
    if ctx.delegate().is_none() {
        match agent::release_endpoint(ctx.agent, &id) {
            Ok(true) => {
                tracing::debug!("the agent took the endpoint and its link");
                return Ok(());
            }
            // Not the agent's: whatever link there is goes below.
            Ok(false) => {}
            // Below, the same request without the hand-over reports it, or queues it
            // when the agent is away.
            Err(e) => tracing::warn!(error = %e, "handing the endpoint to the agent failed"),
        }
    }
    let mut errors: Vec<Error> = Vec::new();

    let host_name = connector::host_ifname(&id);
    match ctx.kernel.link_by_name(Ns::Host, &host_name) {
        Ok(Some(link)) if ours(&link, &id) => match ctx.kernel.delete_link(Ns::Host, link.index) {
            Err(e) if !e.is_not_found() => errors.push(e.into()),
            _ => tracing::debug!(link = %host_name, "host link deleted"),
        },
        Ok(Some(link)) => {
            tracing::warn!(link = %host_name, alias = ?link.alias, "the link by our name belongs to another attachment; left alone")
        }
        Ok(None) => {}
        Err(e) => errors.push(e.into()),
    }

    match agent::del_endpoint(ctx.agent, &id) {
        Ok(()) => {}
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "agent unavailable; queueing the endpoint deletion");
            if let Err(q) = ctx.queue.enqueue(&id) {
                errors.push(q.into());
            }
        }
        Err(e) => errors.push(e.into()),
    }

    if let Some(delegate) = ctx.delegate()
        && let Err(e) = delegate.del()
    {
        errors.push(e.into());
    }
    Error::from_many(errors)
}

/// Our link, unless its alias names another attachment (a hash collision, or a name
/// someone else chose).
fn ours(link: &Link, id: &EndpointId) -> bool {
    match link.alias.as_deref().and_then(connector::parse_alias) {
        Some((_, owner)) => owner == *id,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use netkit_api::Request;

    use super::*;
    use crate::spec::env::Command;
    use crate::spec::error::CniError;
    use crate::testing::{POD, World, id};

    #[test]
    fn del_removes_everything_add_made_and_is_idempotent() {
        for ipam in [json!(null), json!({"type": "fake-ipam"})] {
            let mut w = World::new();
            let before = w.snapshot();
            let conf = w.conf(json!({"ipam": ipam}));
            w.add("c1", POD, &conf).unwrap();
            assert_ne!(w.snapshot(), before);
            // As containerd's CRI repeats it: no netns.
            w.run(Command::Del, "c1", None, &conf).unwrap();
            let after = w.snapshot();
            // `lo` stays up in the pod; everything we created is gone.
            assert_eq!(
                after.replace("up: true", "up: false"),
                before.replace("up: true", "up: false")
            );
            assert!(w.kernel.pod(POD).links.values().all(|l| l.name == "lo"));
            w.run(Command::Del, "c1", Some(POD), &conf).unwrap();
            w.run(Command::Del, "never-added", Some("/run/netns/gone"), &conf)
                .unwrap();
        }
    }

    #[test]
    fn an_absent_agent_queues_the_deletion_and_a_later_command_replays_it() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        w.add("c1", POD, &conf).unwrap();
        w.agent.with(|s| s.up = false);
        w.run(Command::Del, "c1", Some(POD), &conf).unwrap();
        assert!(
            w.kernel
                .host
                .links
                .values()
                .all(|l| !l.name.starts_with("nk")),
            "the link goes anyway"
        );
        assert_eq!(w.queue().pending().unwrap(), vec![id("c1")]);
        assert!(w.agent.with(|s| s.endpoints.contains_key(&id("c1"))));

        w.agent.with(|s| s.up = true);
        w.run(Command::Status, "", None, &conf).unwrap();
        assert!(w.queue().pending().unwrap().is_empty());
        assert!(w.agent.with(|s| s.endpoints.is_empty()));
    }

    #[test]
    fn an_ipam_failure_is_reported_after_the_rest_is_done() {
        let mut w = World::new();
        let conf = w.conf(json!({"ipam": {"type": "fake-ipam"}}));
        w.add("c1", POD, &conf).unwrap();
        w.ipam
            .with(|s| s.fail = Some((Command::Del, CniError::new(5, "disk full"))));
        let err = w.run(Command::Del, "c1", None, &conf).unwrap_err();
        assert_eq!(err.to_cni().code, 5);
        assert!(w.agent.with(|s| s.endpoints.is_empty()));
        assert!(
            w.kernel
                .host
                .links
                .values()
                .all(|l| !l.name.starts_with("nk"))
        );
    }

    fn del_requests(w: &World) -> Vec<bool> {
        w.agent.with(|s| {
            s.requests
                .iter()
                .filter_map(|r| match r {
                    Request::DelEndpoint { take_link, .. } => Some(*take_link),
                    _ => None,
                })
                .collect()
        })
    }

    #[test]
    fn with_builtin_ipam_the_agent_takes_the_link_and_del_returns_before_the_teardown() {
        let mut w = World::new();
        w.finish_teardowns = false;
        let conf = w.conf(json!({}));
        w.add("c1", POD, &conf).unwrap();
        w.run(Command::Del, "c1", None, &conf).unwrap();
        // One request, and the link left to the agent.
        assert_eq!(del_requests(&w), [true]);
        assert_eq!(w.host_links(), [connector::host_ifname(&id("c1"))]);
        assert_eq!(w.agent.with(|s| s.releasing.clone()), [id("c1")]);
        w.finish_teardowns();
        assert!(w.host_links().is_empty());
    }

    #[test]
    fn an_agent_that_does_not_take_the_link_leaves_it_to_the_plugin() {
        let mut w = World::new();
        w.finish_teardowns = false;
        w.agent.with(|s| s.old_agent = true);
        let conf = w.conf(json!({}));
        w.add("c1", POD, &conf).unwrap();
        w.run(Command::Del, "c1", None, &conf).unwrap();
        assert!(w.host_links().is_empty());
        assert!(w.agent.with(|s| s.endpoints.is_empty()));
        // A link the agent never knew (an ADD that died before the hand-off) goes too.
        let name = connector::host_ifname(&id("c2"));
        w.kernel.add_host_link(&name, None);
        w.agent.with(|s| s.old_agent = false);
        w.run(Command::Del, "c2", None, &conf).unwrap();
        assert!(w.host_links().is_empty());
    }

    #[test]
    fn with_delegated_ipam_the_teardown_finishes_before_the_release() {
        let mut w = World::new();
        w.finish_teardowns = false;
        let conf = w.conf(json!({"ipam": {"type": "fake-ipam"}}));
        w.add("c1", POD, &conf).unwrap();
        w.run(Command::Del, "c1", None, &conf).unwrap();
        assert_eq!(del_requests(&w), [false]);
        assert!(w.host_links().is_empty());
    }

    #[test]
    fn a_link_that_names_another_attachment_is_left_alone() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        let name = connector::host_ifname(&id("c1"));
        let index = w
            .kernel
            .add_host_link(&name, Some("netkit-cni:pods:someone-else:eth0"));
        w.run(Command::Del, "c1", None, &conf).unwrap();
        assert!(w.kernel.host.links.contains_key(&index));
    }
}
