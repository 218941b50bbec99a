//! The CLI's client side: talking to a running control plane, minting tokens, checking
//! certificates.

pub(crate) mod check;
mod control;
mod identity;
pub(crate) mod stat;
pub(crate) mod tap;

pub(crate) use check::CheckArgs;
pub(crate) use control::ControlArgs;
pub(crate) use identity::{IdentityArgs, TokenArgs, token};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use weft_control::admin::ApplyReply;

/// Resolves when the process is asked to terminate (SIGTERM).
pub(crate) async fn terminate() -> anyhow::Result<()> {
    let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    sig.recv().await;
    Ok(())
}

/// Reads what `-f` names: a file, every YAML file of a directory (as one
/// multi-document text, so it is applied all or nothing), or standard input.
fn read_manifests(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let text = std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
        return Ok(("<stdin>".into(), text));
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut text = String::new();
        for f in &files {
            text.push_str("\n---\n");
            text.push_str(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?);
        }
        return Ok((path.display().to_string(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// A small HTTP/1.1 POST to the admin API.
async fn post(addr: SocketAddr, path_and_query: &str, body: String) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::post(path_and_query)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/yaml")
        .body(Full::new(Bytes::from(body)))?;
    send(addr, req).await
}

/// A small HTTP/1.1 GET from the admin API.
pub(crate) async fn get(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::get(path_and_query)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    send(addr, req).await
}

async fn send(addr: SocketAddr, req: http::Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| {
        format!("connecting to the control plane's admin API at {addr} (is `weft control` running?)")
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Escapes a query parameter value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `weft apply -f FILE`: exit 0 when everything was stored, 1 when the
/// control plane refused it (nothing stored), with its reasons on stderr.
pub(crate) async fn apply(file: &Path, admin: SocketAddr) -> anyhow::Result<ExitCode> {
    let (label, text) = read_manifests(file)?;
    let (status, body) = post(admin, &format!("/apply?file={}", query_escape(&label)), text).await?;
    let reply: ApplyReply = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => bail!("control plane answered {status}: {}", String::from_utf8_lossy(&body)),
    };
    for line in &reply.applied {
        println!("{line}");
    }
    if reply.errors.is_empty() && status == 200 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: nothing was applied:");
    for e in &reply.errors {
        eprintln!("  {e}");
    }
    Ok(ExitCode::FAILURE)
}
