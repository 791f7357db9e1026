//! Prometheus text metrics and health endpoints on a local TCP address:
//! `/metrics`, `/healthz` (the process is alive) and `/readyz` (it serves requests).
//! Three fixed GET routes do not warrant an HTTP framework.

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::service::Agent;

pub async fn serve(listener: TcpListener, agent: Arc<Mutex<Agent>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, agent).await {
                tracing::debug!(error = %e, "metrics client");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, agent: Arc<Mutex<Agent>>) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/metrics" => ("200 OK", render(&*agent.lock().await)),
        "/healthz" | "/readyz" => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The metrics page. Counter names follow Prometheus conventions (`_total`).
pub fn render(agent: &Agent) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP netkit_datapath_decisions_total Packets by datapath decision."
    );
    let _ = writeln!(out, "# TYPE netkit_datapath_decisions_total counter");
    match agent.counters() {
        Ok(counters) => {
            for c in counters {
                let _ = writeln!(
                    out,
                    "netkit_datapath_decisions_total{{decision=\"{}\"}} {}",
                    c.name, c.value
                );
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "reading counters for metrics"),
    }
    let _ = writeln!(
        out,
        "# HELP netkit_endpoints Endpoints programmed on this node."
    );
    let _ = writeln!(out, "# TYPE netkit_endpoints gauge");
    let _ = writeln!(out, "netkit_endpoints {}", agent.endpoint_count());
    let _ = writeln!(
        out,
        "# HELP netkit_agent_ready Whether the agent serves requests."
    );
    let _ = writeln!(out, "# TYPE netkit_agent_ready gauge");
    let _ = writeln!(out, "netkit_agent_ready 1");
    out
}
