//! Closed-loop HTTP/2 load with h2load (Debian package `nghttp2-client`), installed
//! with apt-get on first use when the bench runs as root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// `GET /`, 1 KiB answers.
    Http2,
    /// gRPC unary: `POST /bench.Echo/Call` with one small message, 1 KiB replies.
    GrpcUnary,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workload::Http2 => "HTTP/2",
            Workload::GrpcUnary => "gRPC unary",
        })
    }
}

/// What h2load reported.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct H2loadResult {
    /// Requests answered 2xx.
    pub(crate) succeeded: u64,
    /// Requests not answered 2xx, or that failed at the transport.
    pub(crate) failed: u64,
    /// Requests a second, as h2load counts them.
    pub(crate) req_per_s: f64,
    /// h2load's `status codes:` line, e.g. `50000 2xx, 0 3xx, 0 4xx, 0 5xx`.
    pub(crate) status_codes: String,
}

/// The h2load binary: on `$PATH`, else installed with `apt-get` (as root), else an
/// error saying what to install.
pub(crate) fn ensure_installed() -> anyhow::Result<PathBuf> {
    if let Some(found) = which("h2load") {
        return Ok(found);
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    anyhow::ensure!(
        root,
        "h2load is not installed: install the Debian package nghttp2-client \
         (`sudo apt-get install -y nghttp2-client`), or run `bench dataplane --only open`"
    );
    eprintln!("installing h2load (apt-get install -y nghttp2-client)");
    for args in [&["update", "-q"][..], &["install", "-y", "-q", "nghttp2-client"][..]] {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("running apt-get")?;
        anyhow::ensure!(
            out.status.success(),
            "apt-get {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    which("h2load").context("apt-get installed nghttp2-client but h2load is not on $PATH")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A closed loop: `connections` HTTP/2 (h2c, prior knowledge) connections with
/// `streams` requests in flight on each, for `duration` after a 1 s warm-up, h2load
/// itself pinned to `cpus`.
#[expect(clippy::too_many_arguments, reason = "h2load's knobs, passed once")]
pub(crate) fn run(
    bin: &Path,
    target: SocketAddr,
    authority: &str,
    workload: Workload,
    connections: usize,
    streams: usize,
    duration: Duration,
    cpus: &str,
    scratch: &Path,
) -> anyhow::Result<H2loadResult> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", cpus])
        .arg(bin)
        .args(["-c", &connections.to_string(), "-m", &streams.to_string(), "-t", "1"])
        .args(["--warm-up-time", "1", "-D", &duration.as_secs().max(1).to_string()])
        .args(["-H", &format!(":authority: {authority}")]);
    let url = match workload {
        Workload::Http2 => format!("http://{target}/"),
        Workload::GrpcUnary => {
            let body = scratch.join("grpc-request.bin");
            std::fs::write(&body, crate::server::GRPC_REQUEST)?;
            command.arg("-d").arg(&body).args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
            format!("http://{target}/bench.Echo/Call")
        }
    };
    let out = command.arg(url).output().context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "h2load failed ({}): {}{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text).with_context(|| format!("reading h2load's output:\n{text}"))
}

/// Reads `finished in 10.00s, 12345.67 req/s, ...` and
/// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`.
fn parse(text: &str) -> anyhow::Result<H2loadResult> {
    let finished =
        text.lines().find_map(|l| l.strip_prefix("finished in ")).context("no `finished in` line")?;
    let req_per_s =
        finished.split(", ").find_map(|f| f.strip_suffix(" req/s")).context("no req/s")?.trim().parse()?;
    let requests = text.lines().find_map(|l| l.strip_prefix("requests: ")).context("no `requests:` line")?;
    let count = |what: &str| -> anyhow::Result<u64> {
        let field = requests
            .split(", ")
            .find_map(|f| f.strip_suffix(what))
            .with_context(|| format!("no `{what}` count"))?;
        Ok(field.trim().parse()?)
    };
    let status_codes =
        text.lines().find_map(|l| l.strip_prefix("status codes: ")).unwrap_or_default().trim().to_owned();
    Ok(H2loadResult {
        succeeded: count(" succeeded")?,
        failed: count(" failed")? + count(" errored")?,
        req_per_s,
        status_codes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn h2load_summary_is_read() {
        let text = "starting benchmark...\n\nfinished in 10.00s, 23456.70 req/s, 25.10MB/s\n\
            requests: 234567 total, 234600 started, 234567 done, 234560 succeeded, 7 failed, 1 errored, 0 timeout\n\
            status codes: 234560 2xx, 0 3xx, 0 4xx, 7 5xx\n";
        let r = parse(text).unwrap();
        assert_eq!(r.succeeded, 234560);
        assert_eq!(r.failed, 8);
        assert_eq!(r.status_codes, "234560 2xx, 0 3xx, 0 4xx, 7 5xx");
        assert!((r.req_per_s - 23456.7).abs() < 1e-6);
    }
}
