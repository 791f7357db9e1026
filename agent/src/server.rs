//! The unix socket the CNI plugin and the CLI talk to: root-only (0600, in a 0700
//! directory we create), one JSON request per connection.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use netkit_api::{ApiError, ErrorKind, Request, Response};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::service::Agent;

/// A request larger than this is refused: the largest real one (GC with every pod of a
/// node) is far smaller.
const MAX_REQUEST: usize = 1 << 20;

pub fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    // A socket file left by a previous run would make bind fail with EADDRINUSE.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", socket.display()))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, agent: Arc<Mutex<Agent>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, agent).await {
                        tracing::warn!(error = %e, "socket client");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accept"),
        }
    }
}

async fn handle(stream: UnixStream, agent: Arc<Mutex<Agent>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let mut agent = agent.lock().await;
            agent.handle(request)
        }
        Err(e) => Response::Error(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("unreadable request: {e}"),
        )),
    };
    let mut bytes = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}
