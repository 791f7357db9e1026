//! Multi-node tier: nodes as network namespaces on one bridge, an agent and pods in each.
//! `rig` checks the cluster rig itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is reported by the panic"
)]

mod rig;
mod routing;
