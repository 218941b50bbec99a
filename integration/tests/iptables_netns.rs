//! `weft-proxy init` in a real network namespace: the rules it installs carry a pod's inbound and
//! outbound TCP transparently through the proxy's listeners, with the original destination
//! intact, and leave alone what they must (the proxy's own traffic, loopback, skipped ports).
//!
//! The test makes two namespaces joined by a veth pair, nothing else: `pod` (192.0.2.2) where
//! the rules go, and `peer` (192.0.2.1) standing for the rest of the cluster. A stand-in proxy
//! in `pod` listens on 4143 and 4140, records each connection's original destination
//! (`SO_ORIGINAL_DST`) and relays it (to `127.0.0.1:port` inbound, to the original destination
//! outbound), as weft-proxy does. The stand-in runs as root, the proxy's uid for the rules; the
//! app's client runs as `nobody`.
//!
//! It needs root, iproute2 and iptables (CI runs as root and `.ci/run` installs iptables). It
//! fails, loudly, when it cannot make its namespaces: a skipped test would hide a broken redirect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

const POD_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two network namespaces joined by a veth pair; deleted (with their rules) on drop.
struct Namespaces {
    pod: String,
    peer: String,
}

impl Namespaces {
    fn create() -> Self {
        let id = std::process::id();
        let ns = Namespaces { pod: format!("weft-pod-{id}"), peer: format!("weft-peer-{id}") };
        for name in [&ns.pod, &ns.peer] {
            let out = Command::new("ip").args(["netns", "add", name]).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!(
                    "cannot create network namespace {name}: {} — this test needs root (CI runs as root), \
                     iproute2 and iptables",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => panic!(
                    "cannot run `ip netns add` ({e}): install iproute2; this test needs root and iptables"
                ),
            }
        }
        // The pair is made inside `pod` with its other end placed straight into `peer`: nothing
        // touches the host's namespace.
        run(Command::new("ip").args([
            "-n", &ns.pod, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &ns.peer,
        ]));
        for (name, dev, addr) in [(&ns.pod, "veth0", POD_IP), (&ns.peer, "veth1", PEER_IP)] {
            run(Command::new("ip").args(["-n", name, "addr", "add", &format!("{addr}/24"), "dev", dev]));
            run(Command::new("ip").args(["-n", name, "link", "set", dev, "up"]));
            run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `name`; sockets it makes stay in
/// that namespace, and so do threads it spawns.
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("entering {path}: {e}"));
        f()
    })
    .join()
    .unwrap()
}

/// A server answering every connection with `<tag>:<port> from <client address>`.
fn serve_tag(listener: TcpListener, tag: &'static str) {
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let peer = conn.peer_addr().unwrap();
            let _ = writeln!(conn, "{tag}:{port} from {}", peer.ip());
        }
    });
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Relays `client` to `upstream` both ways until each side closes.
fn relay(client: TcpStream, upstream: TcpStream) {
    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    std::thread::spawn(move || copy_then_close(c2, u2));
    copy_then_close(upstream, client);
}

/// What the stand-in proxy saw: which listener, and the connection's original destination.
type Seen = (u16, SocketAddrV4);

/// The stand-in proxy: inbound on 4143 relays to the app on loopback, outbound on 4140 dials
/// the original destination (its own uid is exempt from the redirect, so this does not loop).
fn stand_in_proxy(inbound: TcpListener, outbound: TcpListener, seen: mpsc::Sender<Seen>) {
    for (listener, port) in [(inbound, 4143u16), (outbound, 4140u16)] {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let original = socket2::SockRef::from(&conn)
                    .original_dst_v4()
                    .ok()
                    .and_then(|a| a.as_socket_ipv4())
                    .expect("a redirected connection has an original destination");
                seen.send((port, original)).unwrap();
                let target = if port == 4143 {
                    SocketAddr::from((Ipv4Addr::LOCALHOST, original.port()))
                } else {
                    SocketAddr::V4(original)
                };
                let seen_err = format!("dialling {target}");
                std::thread::spawn(move || {
                    let upstream = TcpStream::connect_timeout(&target, IO_TIMEOUT).expect(&seen_err);
                    relay(conn, upstream);
                });
            }
        });
    }
}

/// Connects from the current namespace and reads the whole answer.
fn ask(addr: SocketAddr) -> String {
    let mut conn =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
    answer.trim().to_string()
}

/// The app's client: `nobody` inside the pod's namespace (not the proxy's uid), with bash's
/// /dev/tcp so no extra tool is needed.
fn ask_as_app(ns: &str, addr: SocketAddr) -> String {
    let script = format!("exec 3<>/dev/tcp/{}/{} && timeout 10 cat <&3", addr.ip(), addr.port());
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "bash",
        "-c",
        &script,
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn drain(seen: &mpsc::Receiver<Seen>) -> Vec<Seen> {
    let mut all = Vec::new();
    // The stand-in reports before it relays, so anything it saw is already queued; wait a
    // little in case the relay's first bytes outran the report.
    while let Ok(s) = seen.recv_timeout(Duration::from_millis(200)) {
        all.push(s);
    }
    all
}

#[test]
fn weft_proxy_init_redirects_pod_traffic_through_the_proxy_transparently() {
    let proxy_bin = weft_integration::weft_proxy_bin().unwrap();
    let ns = Namespaces::create();

    // The app in the pod (8080 meshed, 9090 skipped) and two services in the peer (80 meshed,
    // 5432 skipped).
    in_netns(&ns.pod, || {
        serve_tag(TcpListener::bind("0.0.0.0:8080").unwrap(), "pod-app");
        serve_tag(TcpListener::bind("0.0.0.0:9090").unwrap(), "pod-app");
    });
    in_netns(&ns.peer, || {
        serve_tag(TcpListener::bind("0.0.0.0:80").unwrap(), "peer");
        serve_tag(TcpListener::bind("0.0.0.0:5432").unwrap(), "peer");
    });
    let (seen_tx, seen) = mpsc::channel();
    in_netns(&ns.pod, move || {
        let inbound = TcpListener::bind("0.0.0.0:4143").unwrap();
        let outbound = TcpListener::bind("0.0.0.0:4140").unwrap();
        stand_in_proxy(inbound, outbound, seen_tx);
    });

    // Before the rules, traffic goes straight to the app.
    let direct = in_netns(&ns.peer, || ask(SocketAddr::from((POD_IP, 8080))));
    assert_eq!(direct, format!("pod-app:8080 from {PEER_IP}"));
    assert!(drain(&seen).is_empty());

    // Twice: an init container restarted in the same pod must not stack its rules.
    for _ in 0..2 {
        run(Command::new("ip").args(["netns", "exec", &ns.pod]).arg(&proxy_bin).args([
            "init",
            "--proxy-uid",
            "0",
            "--skip-inbound-ports",
            "9090",
            "--skip-outbound-ports",
            "5432",
        ]));
    }
    let saved = String::from_utf8(
        run(Command::new("ip").args(["netns", "exec", &ns.pod, "iptables-save", "-t", "nat"])).stdout,
    )
    .unwrap();
    assert_eq!(saved.matches("-A PREROUTING -p tcp -j WEFT_INBOUND").count(), 1, "{saved}");
    assert_eq!(saved.matches("-A OUTPUT -p tcp -j WEFT_OUTBOUND").count(), 1, "{saved}");
    assert_eq!(saved.matches("--to-ports 4143").count(), 1, "{saved}");

    // Inbound to a meshed port: through the proxy's 4143, original destination kept, and the
    // app sees the proxy (loopback) as its client.
    let answer = in_netns(&ns.peer, || ask(SocketAddr::from((POD_IP, 8080))));
    assert_eq!(answer, "pod-app:8080 from 127.0.0.1");
    assert_eq!(drain(&seen), [(4143, SocketAddrV4::new(POD_IP, 8080))]);

    // Inbound to a skipped port: straight to the app.
    let answer = in_netns(&ns.peer, || ask(SocketAddr::from((POD_IP, 9090))));
    assert_eq!(answer, format!("pod-app:9090 from {PEER_IP}"));
    assert!(drain(&seen).is_empty());

    // Outbound from the app: through 4140, original destination kept; the proxy's own dial out
    // (uid 0) is not redirected again, so exactly one connection is seen.
    let answer = ask_as_app(&ns.pod, SocketAddr::from((PEER_IP, 80)));
    assert_eq!(answer, format!("peer:80 from {POD_IP}"));
    assert_eq!(drain(&seen), [(4140, SocketAddrV4::new(PEER_IP, 80))]);

    // Outbound to a skipped port, and to loopback: straight through.
    let answer = ask_as_app(&ns.pod, SocketAddr::from((PEER_IP, 5432)));
    assert_eq!(answer, format!("peer:5432 from {POD_IP}"));
    let answer = ask_as_app(&ns.pod, SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)));
    assert_eq!(answer, "pod-app:8080 from 127.0.0.1");
    assert!(drain(&seen).is_empty());
}
