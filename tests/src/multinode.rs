//! (rig: multinode)
