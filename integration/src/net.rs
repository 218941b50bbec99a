//! Loopback addresses for workloads.
//!
//! Locally every workload gets its own loopback address as its pod IP (any `127.x.y.z`
//! answers on Linux without setup), so each workload's proxy can use the well-known
//! ports. Tests run in parallel, as threads of one process (`cargo test`) or as one
//! process each (`cargo nextest`), so two tests must never pick the same addresses.
//!
//! A test asks for a [`Subnet`]: a `127.A.B.0/24` block that it alone uses. The block is
//! claimed by listening on [`CLAIM_PORT`] at `127.A.B.255`; the kernel refuses a second
//! claim on the same block from any thread or process, and releases it when the
//! [`Subnet`] is dropped or the process dies, so a crashed test leaks nothing. The first
//! block tried is derived from the process id (second octet `A` from the pid, never 0,
//! so `127.0.0.1` and friends stay out of the way) and blocks are probed in order from
//! there. Inside its subnet a test may use any port, including fixed ones like 4140.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The port that marks a subnet as taken, at its `.255` address. Above Linux's
/// ephemeral range (32768–60999), so no outgoing connection ever holds it by chance.
pub const CLAIM_PORT: u16 = 65432;

/// `127.a.b.c`.
pub fn loopback(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A port that was free on `ip` a moment ago (bind port 0, read it, close).
///
/// Another process may take it before you bind it again; prefer binding port 0 yourself,
/// or use fixed ports inside a [`Subnet`], which no one else uses.
pub fn free_port_on(ip: IpAddr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| anyhow::anyhow!("binding {ip}:0 to find a free port: {e}"))?;
    Ok(listener.local_addr()?.port())
}

/// A `127.A.B.0/24` block of loopback addresses that only its holder uses (see the
/// [module docs](self)). Hosts `.1` to `.254` are free for workloads, on any port.
#[derive(Debug)]
pub struct Subnet {
    a: u8,
    b: u8,
    _claim: TcpListener,
}

/// Second and third octets per block: `A` in 1..=254, `B` in 0..=255.
const BLOCKS: u32 = 254 * 256;

/// Blocks already handed out by this process, so threads of one process do not all
/// start probing at the same block.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

impl Subnet {
    /// Claims a block no other test (thread or process) holds.
    pub fn claim() -> anyhow::Result<Subnet> {
        // Spread processes apart (about 64 blocks each) so they rarely probe the same blocks.
        let start = std::process::id().wrapping_mul(64) + HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        for i in 0..BLOCKS {
            let n = start.wrapping_add(i) % BLOCKS;
            let (a, b) = ((1 + n / 256) as u8, (n % 256) as u8);
            let claim_addr = SocketAddr::new(loopback(a, b, 255), CLAIM_PORT);
            match TcpListener::bind(claim_addr) {
                Ok(claim) => {
                    return Ok(Subnet { a, b, _claim: claim });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => anyhow::bail!(
                    "cannot bind {claim_addr} (the harness needs all of 127.0.0.0/8, as on Linux): {e}"
                ),
            }
        }
        anyhow::bail!("every 127.A.B.0/24 block is claimed; are 65,000 tests running?")
    }

    /// `127.A.B.host`.
    pub fn ip(&self, host: u8) -> IpAddr {
        loopback(self.a, self.b, host)
    }

    /// `127.A.B.host:port`.
    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(host), port)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.{}.{}.0/24", self.a, self.b)
    }
}
