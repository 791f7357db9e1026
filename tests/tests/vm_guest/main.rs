//! vm_guest tier: tests that run INSIDE the netkit VM (booted by the `vm` target through
//! `hack/vm/run.sh`, whose kernel has `CONFIG_NETKIT=y`). Outside it (`NETKIT_VM_GUEST` is not
//! "1") every test returns early after printing a skip line, which the `vm` target checks for.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is reported by the panic"
)]

// The host tier's datapath suite, run again here where `mode: auto` picks netkit.
#[path = "../netns/datapath.rs"]
mod datapath;
mod netkit_link;
mod peer_drop;
// The restart suite too: netkit links are swapped with BPF_LINK_UPDATE like tcx ones.
#[path = "../netns/restart.rs"]
mod restart;
// Cross-node: the nodes are namespaces inside the VM, their pods on netkit.
#[path = "../multinode/routing.rs"]
mod multinode_routing;

/// The line every test prints when it skips; the host-side `vm` test fails if it sees it.
pub const SKIP_LINE: &str = "skip: not inside the netkit VM (run via the vm tier)";

/// True inside the VM; otherwise prints the skip line and the test should return.
pub fn in_vm() -> bool {
    if std::env::var("NETKIT_VM_GUEST").as_deref() == Ok("1") {
        true
    } else {
        println!("{SKIP_LINE}");
        false
    }
}
