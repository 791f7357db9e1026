//! The kernel seam: the [`Kernel`] trait, its rtnetlink implementation
//! ([`rtnl::RtKernel`]), the netns handling and, in unit tests, the in-memory
//! `fake::FakeKernel` — all from the shared `netkit-netlink` crate, re-exported here so
//! the plugin names them in one place.

pub use netkit_netlink::*;
