//! netns tier: the real binaries against pods that are network namespaces on the host
//! kernel. `rig` checks the namespace rig itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is reported by the panic"
)]

mod agent;
mod cni;
mod concurrency;
mod datapath;
mod faults;
mod netlink;
mod restart;
mod rig;
