//! containerd tier.
