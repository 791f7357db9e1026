//! netkit-agent as a library: the daemon's parts (datapath, endpoint service, registry,
//! node routing and node sources, socket server, metrics, CNI install) with seams for the kernel and the datapath, so
//! their logic is unit-tested without root; `main.rs` is the thin binary over [`cli`].

pub mod cli;
pub mod datapath;
pub mod endpoint_name;
pub mod fault;
pub mod install;
pub mod ipam;
pub mod metrics;
pub mod nodes;
pub mod registry;
pub mod routing;
pub mod server;
pub mod service;
pub mod shared;
