//! Sysctls under `/proc/sys`, which shows the network namespace of the thread that
//! opens it.

use std::path::Path;

use crate::error::{KernelError, KernelResult};

/// A sysctl by its path under `/proc/sys` (`net/ipv4/ip_forward`), trimmed.
pub fn read(key: &str) -> KernelResult<String> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| KernelError::from_io(format!("read {}", path.display()), &e))
}

pub fn write(key: &str, value: &str) -> KernelResult<()> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value)
        .map_err(|e| KernelError::from_io(format!("write {} = {value}", path.display()), &e))
}
