//! GC: remove every attachment not in `cni.dev/valid-attachments`. The agent removes
//! its stale endpoints (built-in IPs with them) and says which; their host links go;
//! host links whose alias names this network and a stale attachment go too (links
//! from an ADD that died before the hand-off); the delegated IPAM plugin gets the GC.
//! Like the spec asks, every part runs even after one fails; all errors are reported.

use std::collections::BTreeSet;

use netkit_api::EndpointId;

use super::Ctx;
use crate::agent;
use crate::connector;
use crate::error::Error;
use crate::netlink::Ns;
use crate::spec::config::{ConfigError, VALID_ATTACHMENTS};

pub fn gc(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    // Without the list we would delete everything: refuse instead.
    let valid = ctx
        .conf
        .valid_attachments
        .clone()
        .ok_or_else(|| ConfigError::Invalid {
            field: VALID_ATTACHMENTS.to_string(),
            reason: "missing (required for GC)".to_string(),
        })?;
    let keep: BTreeSet<&EndpointId> = valid.iter().collect();
    ctx.flush_deletion_queue();
    let mut errors: Vec<Error> = Vec::new();

    let mut stale_links: BTreeSet<String> = BTreeSet::new();
    match agent::gc(ctx.agent, &valid) {
        Ok(removed) => {
            tracing::info!(count = removed.len(), "agent removed stale endpoints");
            stale_links.extend(
                removed
                    .iter()
                    .filter(|id| !keep.contains(id))
                    .map(connector::host_ifname),
            );
        }
        Err(e) => errors.push(e.into()),
    }

    match ctx.kernel.links(Ns::Host) {
        Ok(links) => {
            for link in &links {
                let by_alias = link.alias.as_deref().and_then(connector::parse_alias);
                if let Some((network, id)) = by_alias
                    && network == ctx.conf.name
                    && !keep.contains(&id)
                {
                    stale_links.insert(link.name.clone());
                }
            }
            for link in links.iter().filter(|l| stale_links.contains(&l.name)) {
                match ctx.kernel.delete_link(Ns::Host, link.index) {
                    Err(e) if !e.is_not_found() => errors.push(e.into()),
                    _ => tracing::info!(link = %link.name, "stale host link deleted"),
                }
            }
        }
        Err(e) => errors.push(e.into()),
    }

    if let Some(delegate) = ctx.delegate()
        && let Err(e) = delegate.gc()
    {
        errors.push(e.into());
    }
    Error::from_many(errors)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::env::Command;
    use crate::testing::{POD, POD2, World, id};

    fn valid(ids: &[&str]) -> serde_json::Value {
        json!(
            ids.iter()
                .map(|c| json!({"containerID": c, "ifname": "eth0"}))
                .collect::<Vec<_>>()
        )
    }

    #[test]
    fn only_the_valid_attachments_survive() {
        let mut w = World::new();
        let conf = w.conf(json!({"ipam": {"type": "fake-ipam"}}));
        w.add("keep", POD, &conf).unwrap();
        w.add("stale", POD2, &conf).unwrap();
        // A link whose ADD died before the hand-off: no agent endpoint.
        let orphan = connector::host_ifname(&id("orphan"));
        w.kernel
            .add_host_link(&orphan, Some("netkit-cni:pods:orphan:eth0"));
        // Another network's link is not ours to judge.
        let other = w
            .kernel
            .add_host_link("nkother000000", Some("netkit-cni:other-net:x:eth0"));

        let mut gc_conf = conf.clone();
        gc_conf["cni.dev/valid-attachments"] = valid(&["keep"]);
        w.run(Command::Gc, "", None, &gc_conf).unwrap();

        assert_eq!(
            w.host_links(),
            vec![
                connector::host_ifname(&id("keep")),
                "nkother000000".to_string()
            ]
        );
        assert!(w.kernel.host.links.contains_key(&other));
        assert_eq!(
            w.agent
                .with(|s| s.endpoints.keys().cloned().collect::<Vec<_>>()),
            vec![id("keep")]
        );
        assert!(
            w.ipam
                .with(|s| s.calls.iter().any(|(c, _)| *c == Command::Gc)),
            "GC forwarded to IPAM"
        );
    }

    #[test]
    fn without_the_list_nothing_is_deleted() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        w.add("keep", POD, &conf).unwrap();
        let err = w.run(Command::Gc, "", None, &conf).unwrap_err();
        assert_eq!(err.to_cni().code, 7);
        assert!(err.to_string().contains("cni.dev/valid-attachments"));
        assert_eq!(w.host_links().len(), 1);
    }

    #[test]
    fn an_absent_agent_is_reported_but_links_are_still_collected() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        w.add("stale", POD, &conf).unwrap();
        w.agent.with(|s| s.up = false);
        let mut gc_conf = conf.clone();
        gc_conf["cni.dev/valid-attachments"] = valid(&[]);
        let err = w.run(Command::Gc, "", None, &gc_conf).unwrap_err();
        assert_eq!(err.to_cni().code, 11);
        assert!(w.host_links().is_empty());
    }
}
