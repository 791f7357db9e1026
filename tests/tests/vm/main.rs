//! vm tier.
