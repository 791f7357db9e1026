//! Fault points for the fault-injection tests, set with `NETKIT_AGENT_FAULT` at agent
//! start: `kill:<point>` kills the agent with SIGKILL on reaching the point (a crash at
//! the worst moment), `sleep:<point>:<ms>` stalls there (a slow kernel), so tests can
//! show what the node looks like afterwards and that other requests go on meanwhile.
//! Only tests set it; unset, a point costs one comparison.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const ENV: &str = "NETKIT_AGENT_FAULT";

enum Fault {
    Kill(String),
    Sleep(String, Duration),
}

fn configured() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let mut parts = spec.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("kill"), Some(point), None) => Some(Fault::Kill(point.to_string())),
                (Some("sleep"), Some(point), Some(ms)) => ms
                    .parse()
                    .ok()
                    .map(|ms| Fault::Sleep(point.to_string(), Duration::from_millis(ms))),
                _ => {
                    tracing::error!(
                        spec,
                        "{ENV}: not kill:<point> or sleep:<point>:<ms>; ignored"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Whether the one stall has happened.
static SLEPT: AtomicBool = AtomicBool::new(false);

/// Act out the configured fault if it is for this point.
pub fn point(name: &str) {
    match configured() {
        Some(Fault::Kill(point)) if point == name => {
            tracing::warn!(point = name, "fault injection: killing the agent");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        Some(Fault::Sleep(point, pause))
            if point == name && !SLEPT.swap(true, Ordering::SeqCst) =>
        {
            tracing::warn!(point = name, ?pause, "fault injection: stalling");
            std::thread::sleep(*pause);
        }
        _ => {}
    }
}
