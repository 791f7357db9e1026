//! netns tier.
