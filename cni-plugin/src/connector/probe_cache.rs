//! What `mode: auto` learnt about the running kernel: that it has no netkit.
//!
//! Without this, every ADD on such a kernel would first ask for a netkit pair and be
//! refused. The refusal is cheap only where the kernel cannot load modules: otherwise
//! `rtnl_newlink` first runs `modprobe rtnl-link-netkit` for the unknown link kind
//! (`request_module`, a process the kernel spawns and waits for) before answering
//! `EOPNOTSUPP` — once per pod. So the first refusal is written down, keyed by the boot
//! id: a kernel gains netkit only by booting another kernel, or by a module installed
//! later, which this boot then keeps ignoring until the next (the plugin logs the
//! fallback at debug level each time it uses the record).

use std::path::{Path, PathBuf};

/// Changes with every boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// The record's name in the plugin's state directory.
const RECORD: &str = "kernel-without-netkit";

pub struct NetkitProbeCache {
    record: PathBuf,
    boot_id: PathBuf,
}

impl NetkitProbeCache {
    pub fn new(state_dir: &Path) -> NetkitProbeCache {
        NetkitProbeCache {
            record: state_dir.join(RECORD),
            boot_id: PathBuf::from(BOOT_ID),
        }
    }

    /// Whether a probe during this boot found no netkit.
    pub fn known_absent(&self) -> bool {
        match (read_trimmed(&self.record), read_trimmed(&self.boot_id)) {
            (Some(recorded), Some(boot)) => !boot.is_empty() && recorded == boot,
            _ => false,
        }
    }

    /// Record that this boot's kernel has no netkit. Best effort: without the record the
    /// next ADD probes again, which is only slower.
    pub fn remember_absent(&self) {
        let Some(boot) = read_trimmed(&self.boot_id) else {
            return;
        };
        let mut tmp = self.record.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = std::fs::write(&tmp, format!("{boot}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.record));
        if let Err(e) = written {
            tracing::debug!(record = %self.record.display(), error = %e, "cannot record that the kernel has no netkit");
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, boot: &str) -> NetkitProbeCache {
        let boot_id = dir.join("boot_id");
        std::fs::write(&boot_id, format!("{boot}\n")).unwrap();
        NetkitProbeCache {
            record: dir.join(RECORD),
            boot_id,
        }
    }

    #[test]
    fn an_absence_holds_for_the_boot_that_found_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let this_boot = cache(dir.path(), "a1");
        assert!(!this_boot.known_absent());
        this_boot.remember_absent();
        assert!(this_boot.known_absent());
        let next_boot = cache(dir.path(), "b2");
        assert!(
            !next_boot.known_absent(),
            "a record of another boot counted"
        );
    }

    #[test]
    fn an_unwritable_state_directory_only_means_probing_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache(dir.path(), "a1");
        c.record = dir.path().join("missing/dir").join(RECORD);
        c.remember_absent();
        assert!(!c.known_absent());
        assert!(!dir.path().join("missing").exists());
    }
}
