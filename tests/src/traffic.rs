//! Traffic and translation the datapath tests share: a TCP echo and a bulk TCP transfer
//! between namespaces, and a Service-style DNAT as kube-proxy's nftables mode writes it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::netns::Netns;

/// Echo five bytes over TCP: a server in `to` listening on `listen`, a client in `from`
/// connecting to `connect` (the same address, or one the node translates to it).
/// Returns whether the echo came back.
pub fn tcp_echo(from: &Netns, to: &Netns, listen: SocketAddr, connect: SocketAddr) -> bool {
    let listener = to.run(move || TcpListener::bind(listen).expect("bind the echo server"));
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
    });
    let echoed = from.run(move || {
        let mut conn = TcpStream::connect_timeout(&connect, Duration::from_secs(5)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(b"hello").ok()?;
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).ok()?;
        Some(buf)
    });
    if echoed.is_some() {
        server.join().expect("echo server");
    }
    echoed == Some(*b"hello")
}

/// Send `bytes` over one TCP connection in 64 KiB writes, as a bulk transfer does: a
/// server in `to` listening on `listen` reads to the end, a client in `from` connects to
/// `connect`. Writes that large leave the sender as GSO packets, tens of kilobytes each,
/// cut into MTU-sized segments only on the way out. Returns whether every byte arrived.
pub fn tcp_bulk(
    from: &Netns,
    to: &Netns,
    listen: SocketAddr,
    connect: SocketAddr,
    bytes: usize,
) -> bool {
    let listener = to.run(move || TcpListener::bind(listen).expect("bind the bulk server"));
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut received = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return Some(received),
                Ok(n) => received += n,
                // A signal ends a read on a socket with a timeout with EINTR even under
                // SA_RESTART (signal(7)): not a broken connection.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    });
    let sent = from.run(move || {
        let mut conn = TcpStream::connect_timeout(&connect, Duration::from_secs(5)).ok()?;
        conn.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
        let chunk = vec![0x5au8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            conn.write_all(&chunk[..n]).ok()?;
            left -= n;
        }
        conn.shutdown(std::net::Shutdown::Write).ok()?;
        Some(())
    });
    // A client that never connected leaves the server in accept: joining it would hang
    // the test instead of failing it (a connection that broke ends the server's read).
    if sent.is_none() {
        return false;
    }
    server.join().ok().flatten() == Some(bytes)
}

/// Drop forwarded packets conntrack calls INVALID, as kube-proxy's
/// `-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP` does; `nft` is a Command for
/// `nft` in the node.
pub fn drop_invalid_forwarded(nft: Command) {
    run_nft(
        nft,
        "add table inet nk_invalid\n\
         add chain inet nk_invalid forward { type filter hook forward priority filter; }\n\
         add rule inet nk_invalid forward ct state invalid drop\n",
    );
}

/// Translate `vip:port` to `backend` in a node's prerouting, as kube-proxy's nftables
/// mode does (a DNAT, no masquerade); `nft` is a Command for `nft` in the node. nftables
/// rather than iptables so the host and the VM (which has `nft` and the nf_tables
/// modules, not the iptables extensions) run the same rule. Panics when NAT cannot be
/// set up: the tests that need it are not optional.
pub fn dnat(nft: Command, vip: &str, port: u16, backend: SocketAddr) {
    let script = format!(
        "add table ip nk_test\n\
         add chain ip nk_test prerouting {{ type nat hook prerouting priority dstnat; }}\n\
         add rule ip nk_test prerouting ip daddr {vip} tcp dport {port} dnat to {backend}\n"
    );
    run_nft(nft, &script);
}

/// Feed `script` to `nft -f -`. Panics when it fails: the tests that need a rule are
/// not optional.
fn run_nft(mut nft: Command, script: &str) {
    let mut child = nft
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (apt-get install nftables; in the VM, hack/vm/initramfs.sh carries it)");
    child
        .stdin
        .take()
        .expect("nft's stdin")
        .write_all(script.as_bytes())
        .expect("writing the nft script");
    let status = child.wait().expect("waiting for nft");
    assert!(status.success(), "nft -f failed on:\n{script}");
}
