//! IP address management, two ways: built-in (the agent allocates in the same round
//! trip that programs the datapath) or delegated to a CNI IPAM plugin.

pub mod builtin;
pub mod delegated;

use netkit_api::IpConfig;

pub use delegated::{Delegate, IpamError, PluginExec, ProcessExec};

use crate::spec::result::IpEntry;

/// Delegated IPAM's addresses as the agent API carries them (pool prefix, gateway as
/// the IPAM plugin returned them).
pub fn to_api(ips: &[IpEntry]) -> Vec<IpConfig> {
    ips.iter()
        .map(|ip| IpConfig {
            address: ip.address.to_string(),
            gateway: ip.gateway.map(|g| g.to_string()),
        })
        .collect()
}
