//! Fault points for the fault-injection tests. With `NETKIT_CNI_FAULT=<point>` in its
//! environment the plugin kills itself with SIGKILL on reaching that point — what a
//! runtime's timeout or the OOM killer does to a plugin mid-ADD — so the tests can show
//! that the runtime's usual follow-up (DEL, GC) leaves nothing behind. Only tests set
//! it; unset, a point costs one comparison.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const ENV: &str = "NETKIT_CNI_FAULT";

/// Every point ADD passes, in order (the tests walk them all).
pub const ADD_POINTS: &[&str] = &[
    "after-ipam",
    "after-link",
    "after-pod-up",
    "after-agent",
    "after-pod-addresses",
    "after-pod-routes",
    "after-host",
];

/// Die here if the environment names this point.
pub fn point(name: &'static str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(ENV).ok());
    if chosen.as_deref() == Some(name) {
        tracing::warn!(point = name, "fault injection: killing the plugin");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
