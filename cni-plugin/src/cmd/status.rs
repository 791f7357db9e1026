//! STATUS: ready when the agent says it is ready and the delegated IPAM plugin's own
//! STATUS succeeds. Every failure is code 50 (cannot service ADD). 51 is not used:
//! the datapath is pinned in bpffs, so existing pods keep their connectivity while
//! the agent is away.

use super::Ctx;
use crate::agent;
use crate::error::Error;

pub fn status(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    ctx.flush_deletion_queue();
    let unavailable = |e: Error| Error::Unavailable(Box::new(e));
    let status = agent::status(ctx.agent).map_err(|e| unavailable(e.into()))?;
    if !status.ready {
        let reason = status.reason.unwrap_or_else(|| "no reason given".into());
        return Err(unavailable(Error::AgentNotReady { reason }));
    }
    if let Some(delegate) = ctx.delegate() {
        delegate.status().map_err(|e| unavailable(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::spec::env::Command;
    use crate::spec::error::CniError;
    use crate::testing::World;

    #[test]
    fn ready_only_when_the_agent_and_the_ipam_plugin_are() {
        let mut w = World::new();
        let builtin = w.conf(json!({}));
        let delegated = w.conf(json!({"ipam": {"type": "fake-ipam"}}));
        assert!(
            w.run(Command::Status, "", None, &builtin)
                .unwrap()
                .is_none()
        );
        assert!(w.run(Command::Status, "", None, &delegated).is_ok());

        w.ipam
            .with(|s| s.fail = Some((Command::Status, CniError::new(2, "no range"))));
        let err = w.run(Command::Status, "", None, &delegated).unwrap_err();
        assert_eq!(err.to_cni().code, 50);
        assert!(w.run(Command::Status, "", None, &builtin).is_ok());

        w.agent.with(|s| s.ready = false);
        let err = w.run(Command::Status, "", None, &builtin).unwrap_err();
        assert_eq!(err.to_cni().code, 50);
        assert!(err.to_string().contains("loading programs"), "{err}");

        w.agent.with(|s| s.up = false);
        let err = w.run(Command::Status, "", None, &builtin).unwrap_err();
        assert_eq!(err.to_cni().code, 50);
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }
}
