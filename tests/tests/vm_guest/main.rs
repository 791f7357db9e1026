//! vm_guest tier.
