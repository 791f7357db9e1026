//! (rig: netns)
