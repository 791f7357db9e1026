//! An agent restart loses nothing: a continuous ping (200 per second) and a TCP stream
//! between two pods run while the agent is killed with SIGKILL and restarted, and while
//! it is stopped and replaced by one running a different program (what an upgrade does:
//! the new process loads its programs and swaps them into the pinned links with
//! `BPF_LINK_UPDATE`). Not one ICMP reply is lost, the stream never stalls for a second,
//! and endpoints, map entries, pins and links afterwards equal those before.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netkit_tests::pods::{Node, Pod, pod_ip};
use serde_json::{Value, json};

/// Everything the node holds for its pods, to compare before and after.
fn node_state(node: &Node) -> (Value, Vec<String>, Vec<String>, Value) {
    let mut endpoints = node.agent().endpoints();
    endpoints.sort_by_key(|e| e["id"].to_string());
    let pins_dir = node.dirs.bpffs.path().join("endpoints");
    let mut pins: Vec<String> = walk(&pins_dir);
    pins.sort();
    let mut links = node.plugin_links();
    links.sort();
    let status = node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    (
        Value::Array(endpoints),
        pins,
        links,
        status["mapped_addresses"].clone(),
    )
}

/// Relative paths of every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            out.extend(walk(&path).into_iter().map(|p| format!("{name}/{p}")));
        } else {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn no_packet_is_lost_while_the_agent_crashes_restarts_and_is_replaced() {
    let mut node = Node::new("rst");
    let conf = node.conf(json!({}));
    let (a, b) = (Pod::new("rsta"), Pod::new("rstb"));
    node.add(&a, &conf);
    let rb = node.add(&b, &conf);
    let b_ip = pod_ip(&rb, false);
    let before = node_state(&node);

    // The TCP stream: A writes 1 KiB every 5 ms; B reads and records the longest gap.
    let server_addr: SocketAddr = format!("{b_ip}:7000").parse().unwrap();
    let listener = b.ns.run(move || TcpListener::bind(server_addr).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let (mut last, mut longest, mut total) = (Instant::now(), Duration::ZERO, 0usize);
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                // A signal delivered to this thread ends a read on a socket with a
                // timeout with EINTR even under SA_RESTART (signal(7)); the stream is
                // fine, so read on (the gap keeps counting from the last data).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("stream broke after {total} bytes: {e}"),
            }
        }
        (longest, total)
    });
    let writer_stop = stop.clone();
    // The socket is made in A's namespace and stays there; the thread writing to it
    // need not be.
    let mut conn =
        a.ns.run(move || TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)).unwrap());
    let writer = std::thread::spawn(move || {
        let chunk = [7u8; 1024];
        let mut sent = 0usize;
        while !writer_stop.load(Ordering::Relaxed) {
            conn.write_all(&chunk).unwrap();
            sent += chunk.len();
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(conn);
        sent
    });

    // 200 echo requests a second for the whole run (-w bounds it).
    let ping =
        a.ns.command("ping")
            .args(["-i", "0.005", "-c", "1400", "-w", "20", "-q", &b_ip])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();

    std::thread::sleep(Duration::from_millis(1500));
    node.crash_and_restart_agent();
    std::thread::sleep(Duration::from_millis(1500));
    // Replace the agent by one whose datapath program differs (as an upgrade does): with
    // `--translation-check stack-only` it loads other programs (the `_noct` twins) and
    // swaps them into every pinned link with BPF_LINK_UPDATE.
    node.agent_args
        .extend(["--translation-check".to_string(), "stack-only".to_string()]);
    node.restart_agent();
    let status = node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["translation_check"]
            .as_str()
            .is_some_and(|t| t.starts_with("stack-only")),
        "the replacement did not change the program: {status}"
    );
    std::thread::sleep(Duration::from_millis(1500));

    let out = ping.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let (longest, received) = reader.join().unwrap();

    let summary = report
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {report}"));
    println!("ping: {summary}; TCP: {received} bytes, longest gap {longest:?}");
    assert!(
        summary.contains(" 0% packet loss"),
        "ICMP lost across the restarts: {summary}"
    );
    assert!(
        summary.starts_with("1400 packets transmitted"),
        "ping did not run its course: {summary}"
    );
    assert_eq!(received, sent, "TCP bytes lost");
    assert!(
        longest < Duration::from_secs(1),
        "the TCP stream stalled for {longest:?}"
    );
    assert_eq!(
        node_state(&node),
        before,
        "node state changed across restarts"
    );
}
