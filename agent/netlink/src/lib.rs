//! netkit-netlink: the one netlink crate the plugin, the agent and the test rigs use.
//!
//! - The async core, one module per kernel object, each a set of `async fn`s over an
//!   [`rtnetlink::Handle`] (get one from [`connect`], or [`connect_in`] another
//!   namespace) plus the pure functions that
//!   build and decode its messages: [`link`] (with netkit/veth [`link::Pair`]s),
//!   [`address`], [`route`] (table and protocol: [`route::RouteOwner`]; one
//!   destination's route, without a dump: [`route::get`]), [`neighbour`]
//!   (static and managed entries), [`sysctl`], [`tc`] (the `ingress` qdisc and `cls_bpf` filters).
//! - [`netns`]: network namespaces opened and entered without moving a shared thread;
//!   only sockets are made in another namespace, never a tokio runtime.
//! - [`error`]: [`KernelError`], naming the failed operation and its errno.
//! - The blocking facade for synchronous callers (the plugin): the [`Kernel`] trait
//!   ([`kernel`]), implemented over the core by [`rtnl::RtKernel`] (its own
//!   current-thread runtime, one connection per namespace; `RtKernel::in_netns` for a
//!   namespace other than the caller's) and in memory by
//!   `fake::FakeKernel` (feature `fake`, for unit tests).

pub mod address;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod kernel;
pub mod link;
pub mod neighbour;
pub mod netns;
pub mod route;
pub mod rtnl;
pub mod sysctl;
pub mod tc;

pub use error::{KernelError, KernelResult};
pub use kernel::{Kernel, Ns, default_route_link};
pub use link::{Link, LinkKind, NetkitInfo, format_mac, meaningful_mac};
pub use neighbour::{Neighbour, NeighbourEntry};
pub use netns::NetnsError;
pub use route::{Route, RouteOwner};
pub use rtnl::RtKernel;

use std::path::Path;

use rtnetlink::Handle;

/// A netlink connection in the calling thread's network namespace, driven by a task on
/// the current tokio runtime; it closes when the last clone of the handle is dropped.
/// Outside a runtime this is an error, not a panic.
pub fn connect() -> KernelResult<Handle> {
    let op = "open a netlink socket";
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| KernelError::new(op, None, e.to_string()))?;
    let (connection, handle, _) = {
        let _entered = runtime.enter();
        rtnetlink::new_connection().map_err(|e| KernelError::from_io(op, &e))?
    };
    runtime.spawn(connection);
    Ok(handle)
}

/// [`connect`], with the socket in the network namespace at `path` (made by a helper
/// thread there; the calling thread stays where it is).
pub fn connect_in(path: &Path) -> KernelResult<Handle> {
    let op = || format!("open a netlink socket in {}", path.display());
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| KernelError::new(op(), None, e.to_string()))?;
    netns::open_any(path)
        .and_then(|fd| netns::connect_in(path, &fd, &runtime))
        .map_err(|e| KernelError::from_netns(op(), &e))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn connecting_outside_a_runtime_is_an_error_not_a_panic() {
        let e = super::connect().unwrap_err();
        assert!(e.op.contains("netlink socket"), "{e}");
        let e = super::connect_in(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(e.op.contains("/proc/self/ns/net"), "{e}");
    }

    #[test]
    fn a_missing_namespace_is_enoent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(async { super::connect_in(Path::new("/nonexistent/netns")) })
            .unwrap_err();
        assert!(e.is(libc::ENOENT), "{e}");
        let e = match super::RtKernel::in_netns(Path::new("/nonexistent/netns")) {
            Ok(_) => panic!("a kernel in a missing namespace"),
            Err(e) => e,
        };
        assert!(e.is_not_found(), "{e}");
    }
}
