//! (rig: containerd)
