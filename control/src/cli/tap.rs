//! `weft tap`: live requests of a workload's proxies, through the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use weft_control::tap::{OPERATOR_TOKEN_FILE, TapLine, TapQuery, read_token};

/// `weft tap` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct TapArgs {
    /// What to tap: `workload/NAME` (local: a proxy's node id or service account) or
    /// `deploy/NAME` (Kubernetes: the Deployment's pods, with -n).
    pub(crate) target: String,
    /// Namespace of the target.
    #[arg(short = 'n', long, env = "WEFT_NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Only requests with this authority (host[:port]).
    #[arg(long)]
    pub(crate) authority: Option<String>,
    /// Only requests to this destination (`workload/NAME` or a service name).
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Most requests per second shown per proxy [default: 100, at most 1000].
    #[arg(long)]
    pub(crate) max_rps: Option<u32>,
    /// How long to tap, e.g. `30s`, `5m` [default: 60s, at most 10m].
    #[arg(long)]
    pub(crate) duration: Option<String>,
    /// Output: `text` (req/rsp lines) or `json` (one JSON object per line).
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub(crate) output: String,
    /// The control plane's admin address.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
    pub(crate) admin_addr: SocketAddr,
    /// The operator token file [default: <ca-dir>/operator-token].
    #[arg(long, env = "WEFT_OPERATOR_TOKEN_FILE")]
    pub(crate) operator_token_file: Option<PathBuf>,
    /// The CA directory, where the control plane keeps the operator token
    /// [default: the control plane's default CA directory].
    #[arg(long, env = "WEFT_CA_DIR")]
    pub(crate) ca_dir: Option<PathBuf>,
}

/// Runs `weft tap`: prints events until the tap ends; exit 1 on an error.
pub(crate) async fn tap(args: &TapArgs) -> anyhow::Result<ExitCode> {
    let token_file = match (&args.operator_token_file, &args.ca_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => dir.join(OPERATOR_TOKEN_FILE),
        (None, None) => weft_control::identity::default_ca_dir()
            .context("no --operator-token-file or --ca-dir given and no default CA directory (HOME unset)")?
            .join(OPERATOR_TOKEN_FILE),
    };
    let token = read_token(&token_file).with_context(|| {
        format!("reading the operator token {} (--operator-token-file)", token_file.display())
    })?;
    let query = TapQuery {
        target: args.target.clone(),
        namespace: args.namespace.clone(),
        path: args.path.clone(),
        method: args.method.clone(),
        authority: args.authority.clone(),
        to: args.to.clone(),
        max_rps: args.max_rps,
        duration: args.duration.clone(),
    };
    let query = serde_urlencoded(&query);
    let req = http::Request::get(format!("/tap?{query}"))
        .header(http::header::HOST, args.admin_addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    let addr = args.admin_addr;
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| {
        format!(
            "control plane unreachable: connecting to its admin API at {addr} (is `weft control` running?)"
        )
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.context("control plane unreachable")?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_owned();
        match status.as_u16() {
            401 => bail!("{text} (the operator token is {})", token_file.display()),
            _ => bail!("{text}"),
        }
    }
    let json = args.output == "json";
    let mut pending = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the tap stream")?;
        let Some(data) = frame.data_ref() else { continue };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Option<TapLine> = serde_json::from_str(&line).ok();
            if parsed.as_ref().is_some_and(|l| l.kind == "error") {
                failed = true;
            }
            if json {
                println!("{line}");
            } else {
                match parsed {
                    Some(l) if l.kind == "error" => eprintln!("{}", l.text()),
                    Some(l) => println!("{}", l.text()),
                    None => println!("{line}"),
                }
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The query string of `q` (form-encoded; unset fields left out).
fn serde_urlencoded(q: &TapQuery) -> String {
    let mut parts = vec![("target", q.target.clone())];
    let optional = [
        ("namespace", q.namespace.clone()),
        ("path", q.path.clone()),
        ("method", q.method.clone()),
        ("authority", q.authority.clone()),
        ("to", q.to.clone()),
        ("max_rps", q.max_rps.map(|n| n.to_string())),
        ("duration", q.duration.clone()),
    ];
    parts.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    parts.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&")
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_encoded() {
        let q = TapQuery {
            target: "workload/payment-v1".into(),
            path: Some("/pay me".into()),
            max_rps: Some(5),
            ..TapQuery::default()
        };
        assert_eq!(serde_urlencoded(&q), "target=workload%2Fpayment-v1&path=%2Fpay%20me&max_rps=5");
    }
}
