//! The unix socket the CNI plugin and the CLI talk to: root-only (0600, in a 0700
//! directory we create), one JSON request per connection. A bad request gets an error
//! reply, never a crash: it cannot reach the endpoint logic unless it parses.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use netkit_api::{ApiError, EndpointId, ErrorKind, Request, Response};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};

use crate::shared::SharedAgent;

/// A request larger than this is refused: the largest real one (GC with every pod of a
/// node) is far smaller.
const MAX_REQUEST: usize = 1 << 20;
/// What is read and dropped of a refused request before the connection is closed.
const DRAIN_MAX: u64 = 16 << 20;
/// How long a client may take to send its request. The plugin and the CLI send it as
/// soon as they are connected; the limit stops a silent or trickling client from holding
/// a connection, its task and its buffer forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a reply may wait for a client that does not read it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Serve the socket, from before the datapath is loaded: until then Status answers
/// "not ready" with the reason and every other request gets a `not_ready` error (the
/// plugin's "try again later"), rather than the client finding no socket.
pub async fn serve(listener: UnixListener, agent: SharedAgent) {
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

async fn handle(stream: UnixStream, agent: SharedAgent) -> std::io::Result<()> {
    let (mut read, mut write) = stream.into_split();
    let (response, teardown) =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut read)).await {
            Ok(Ok(request)) => answer(&agent, request).await,
            Ok(Err(refused)) => (Response::Error(refused), None),
            Err(_) => (
                Response::Error(invalid(format!(
                    "no request within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))),
                None,
            ),
        };
    let replied = reply(&mut read, &mut write, &response).await;
    // Started whether or not the client took its reply: the endpoint is marked releasing
    // and its teardown must finish either way.
    if let (Some(id), Some(agent)) = (teardown, agent.agent()) {
        agent.spawn_teardown(id);
    }
    replied
}

async fn reply(
    read: &mut OwnedReadHalf,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    match tokio::time::timeout(REPLY_TIMEOUT, write.write_all(&bytes)).await {
        Ok(written) => written?,
        Err(_) => return Err(std::io::Error::other("client does not read its reply")),
    }
    write.shutdown().await?;
    // Closing a unix socket with unread bytes in it resets the connection: the client
    // would get ECONNRESET instead of the end of the reply it is reading. So whatever
    // is left of a refused (oversized) request is read and dropped first — bounded in
    // time and size, so a client cannot keep the task alive by writing forever.
    let rest = read.take(DRAIN_MAX);
    let _ = tokio::time::timeout(
        REPLY_TIMEOUT,
        tokio::io::copy(&mut { rest }, &mut tokio::io::sink()),
    )
    .await;
    Ok(())
}

/// The reply, and the endpoint whose teardown starts once it is sent.
async fn answer(shared: &SharedAgent, request: Request) -> (Response, Option<EndpointId>) {
    if request == Request::Status {
        return (Response::Status(shared.status().await), None);
    }
    match shared.agent() {
        // Requests run on blocking threads of their own: one that waits on the kernel
        // (a link attach waits for an RCU grace period) holds up nobody else's.
        Some(agent) => {
            let agent = agent.clone();
            tokio::task::spawn_blocking(move || agent.handle_deferring(request))
                .await
                .unwrap_or_else(|e| {
                    (
                        Response::Error(ApiError::new(
                            ErrorKind::Internal,
                            format!("the request's task failed: {e}"),
                        )),
                        None,
                    )
                })
        }
        None => (
            Response::Error(ApiError::new(
                ErrorKind::NotReady,
                shared
                    .readiness()
                    .err()
                    .unwrap_or_else(|| "the datapath is not loaded".to_string()),
            )),
            None,
        ),
    }
}

/// Read one request line. Anything else — too long, not UTF-8, not JSON, not a request,
/// or a read error — is refused with the reason, so one bad client costs the agent
/// nothing but a reply.
async fn read_request(read: &mut OwnedReadHalf) -> Result<Request, ApiError> {
    // One byte beyond the limit tells an oversized request from one that fits.
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| invalid(format!("reading the request: {e}")))?;
    if line.len() > MAX_REQUEST {
        return Err(invalid(format!("request larger than {MAX_REQUEST} bytes")));
    }
    serde_json::from_slice(&line).map_err(|e| invalid(format!("unreadable request: {e}")))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `read_request` makes of `bytes` sent by a client that then stops writing.
    async fn request_from(bytes: Vec<u8>) -> Result<Request, ApiError> {
        let (client, server) = UnixStream::pair().unwrap();
        let (read, _write) = server.into_split();
        let writer = tokio::spawn(async move {
            let (_, mut write) = client.into_split();
            // The agent stops reading at the limit: a failed write is expected then.
            let _ = write.write_all(&bytes).await;
            let _ = write.shutdown().await;
        });
        let mut read = read;
        let result = read_request(&mut read).await;
        writer.abort();
        result
    }

    async fn refusal(bytes: &[u8]) -> String {
        match request_from(bytes.to_vec()).await {
            Ok(request) => panic!("{bytes:?} was accepted as {request:?}"),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::InvalidRequest);
                e.message
            }
        }
    }

    #[tokio::test]
    async fn a_request_line_parses_with_or_without_its_newline() {
        for bytes in [&b"{\"op\":\"status\"}\n"[..], b"{\"op\":\"status\"}"] {
            assert_eq!(request_from(bytes.to_vec()).await.unwrap(), Request::Status);
        }
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_a_reason() {
        assert!(refusal(b"\x00\x01garbage\n").await.contains("unreadable"));
        assert!(
            refusal(b"\xff\xfe{\"op\":\"status\"}\n")
                .await
                .contains("unreadable")
        );
        assert!(
            refusal(b"{\"op\":\"del_endpoint\",\"id\":{")
                .await
                .contains("unreadable")
        );
        assert!(
            refusal(b"{\"op\":\"no_such_op\"}\n")
                .await
                .contains("unreadable")
        );
        assert!(refusal(b"").await.contains("unreadable"));
        let huge = vec![b'x'; 2 * MAX_REQUEST];
        assert!(refusal(&huge).await.contains("larger than"));
    }
}
