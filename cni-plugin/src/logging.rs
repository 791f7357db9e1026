//! Logs go to the file named by `logFile` (appended), never to stdout: stdout belongs
//! to the protocol. Without `logFile` the plugin logs nothing.

use std::fs::OpenOptions;
use std::sync::Mutex;

use crate::spec::config::NetConf;

pub fn init(conf: &NetConf) {
    let Some(path) = &conf.log_file else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            // Fails only when a subscriber is already set (tests); then logs go there.
            let _ = tracing_subscriber::fmt()
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .with_max_level(conf.log_level.as_tracing())
                .try_init();
        }
        // stderr is the spec's place for unstructured output.
        Err(e) => eprintln!("netkit-cni: cannot open log file {}: {e}", path.display()),
    }
}
