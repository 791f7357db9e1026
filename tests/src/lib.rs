//! Test support for the end-to-end tiers: each rig owns what it creates (unique names,
//! cleanup on drop even when the test panics), so tests run in parallel and re-run.
//!
//! Tests panic rather than return `Result`: a rig that cannot set itself up is a failed
//! test, with the reason in the panic message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure here is a test failure, reported by the panic"
)]

pub mod agent;
pub mod bins;
pub mod cmd;
pub mod containerd;
pub mod multinode;
pub mod netns;
pub mod pods;
pub mod traffic;
pub mod vm;
