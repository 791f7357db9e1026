//! Prometheus text metrics and health endpoints on a local TCP address: `/metrics`,
//! `/healthz` (liveness: the process answers) and `/readyz` (readiness: 200 once the
//! datapath is loaded and the socket serves, 503 with the reason before and while
//! shutting down). Served from the agent's first moment, so a slow start reads as "alive,
//! not ready" rather than as a dead process. Three fixed GET routes do not warrant an
//! HTTP framework.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::nodes::SourceHealth;
use crate::service::Agent;
use crate::shared::SharedAgent;

/// How long a client may take to send its request line (as on the agent socket).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve until dropped; `node_source` is the node source's health, when the agent has
/// one.
pub async fn serve(
    listener: TcpListener,
    agent: SharedAgent,
    node_source: Option<Arc<SourceHealth>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let agent = agent.clone();
        let node_source = node_source.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, agent, node_source.as_deref()).await {
                tracing::debug!(error = %e, "metrics client");
            }
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    agent: SharedAgent,
    node_source: Option<&SourceHealth>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = respond(path, &agent, node_source).await;
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Status line and body for `path`.
async fn respond(
    path: &str,
    shared: &SharedAgent,
    node_source: Option<&SourceHealth>,
) -> (&'static str, String) {
    match path {
        "/healthz" => ("200 OK", "ok\n".to_string()),
        "/readyz" => match shared.readiness() {
            Ok(()) => ("200 OK", "ok\n".to_string()),
            Err(reason) => ("503 Service Unavailable", format!("not ready: {reason}\n")),
        },
        "/metrics" => {
            let ready = shared.readiness().is_ok();
            let body = match shared.agent() {
                Some(agent) => render(Some(agent), ready, node_source),
                None => render(None, ready, node_source),
            };
            ("200 OK", body)
        }
        _ => ("404 Not Found", "not found\n".to_string()),
    }
}

/// One unlabelled metric: its HELP and TYPE lines, then its value.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The metrics page; without an agent (datapath not loaded yet) only the readiness
/// gauge. Counter names follow Prometheus conventions (`_total`).
fn render(agent: Option<&Agent>, ready: bool, node_source: Option<&SourceHealth>) -> String {
    let mut out = String::new();
    if let Some(agent) = agent {
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
        metric(
            &mut out,
            "netkit_endpoints",
            "gauge",
            "Endpoints programmed on this node.",
            agent.endpoint_count(),
        );
        metric(
            &mut out,
            "netkit_endpoints_releasing",
            "gauge",
            "Endpoints deleted whose teardown is under way (their addresses are held until it is done).",
            agent.releasing_count(),
        );
    }
    metric(
        &mut out,
        "netkit_agent_ready",
        "gauge",
        "Whether the agent is ready (as /readyz).",
        u8::from(ready),
    );
    if let Some(health) = node_source {
        metric(
            &mut out,
            "netkit_node_source_connected",
            "gauge",
            "Whether the node source (Kubernetes API, node file) could be read at the last attempt.",
            u8::from(health.connected()),
        );
        metric(
            &mut out,
            "netkit_node_source_errors_total",
            "counter",
            "Failed attempts to read the node source (API requests and watches, unusable node files).",
            health.errors(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One GET over a real connection, as a probe sends it.
    async fn get(shared: &SharedAgent, path: &str) -> String {
        get_with(shared, None, path).await
    }

    async fn get_with(
        shared: &SharedAgent,
        node_source: Option<Arc<SourceHealth>>,
        path: &str,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, shared.clone(), node_source));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.unwrap();
        server.abort();
        reply
    }

    #[tokio::test]
    async fn readyz_is_503_with_the_reason_until_ready_healthz_is_always_200() {
        let shared = SharedAgent::new("loading the datapath");
        let readyz = get(&shared, "/readyz").await;
        assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
        assert!(
            readyz.ends_with("not ready: loading the datapath\n"),
            "{readyz}"
        );
        assert!(get(&shared, "/healthz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(&shared, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("\nnetkit_agent_ready 0\n"), "{metrics}");

        shared.set_ready();
        assert!(get(&shared, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(&shared, "/metrics")
                .await
                .contains("\nnetkit_agent_ready 1\n")
        );

        shared.set_not_ready("shutting down");
        let readyz = get(&shared, "/readyz").await;
        assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
        assert!(get(&shared, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(&shared, "/nope").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn node_source_health_is_a_gauge_and_a_counter() {
        let shared = SharedAgent::new("loading the datapath");
        let without = get(&shared, "/metrics").await;
        assert!(!without.contains("netkit_node_source"), "{without}");
        let health = Arc::new(SourceHealth::default());
        let metrics = get_with(&shared, Some(health.clone()), "/metrics").await;
        assert!(
            metrics.contains("\nnetkit_node_source_connected 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nnetkit_node_source_errors_total 0\n"),
            "{metrics}"
        );
        health.failed();
        health.failed();
        let metrics = get_with(&shared, Some(health.clone()), "/metrics").await;
        assert!(
            metrics.contains("\nnetkit_node_source_connected 0\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nnetkit_node_source_errors_total 2\n"),
            "{metrics}"
        );
        health.succeeded();
        let metrics = get_with(&shared, Some(health), "/metrics").await;
        assert!(
            metrics.contains("\nnetkit_node_source_connected 1\n"),
            "{metrics}"
        );
    }
}
