//! multinode tier.
