//! (rig: vm)
