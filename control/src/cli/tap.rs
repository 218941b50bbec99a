//! `weft tap`: live requests of a workload's proxies, through the control plane.
//!
//! Which credential it sends depends on the control plane: locally the operator token
//! (`<ca-dir>/operator-token`), in Kubernetes a bearer token of the operator's Kubernetes
//! identity (`--token-file`, `$WEFT_TAP_TOKEN`, else the kubeconfig user's token). Flags of
//! one kind pick that kind; with neither, `weft tap` asks the control plane first (a request
//! without a credential is answered 401 with the realm it wants).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use weft_control::tap::{
    OPERATOR_TOKEN_FILE, REALM_KUBERNETES, REALM_OPERATOR_TOKEN, TapLine, TapQuery, read_token,
};

/// `weft tap` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct TapArgs {
    /// What to tap: `deploy/NAME` (the Deployment's pods; Kubernetes), `pod/NAME`, or
    /// `workload/NAME` (a proxy's node id or service account).
    pub(crate) target: String,
    /// Namespace of the target [Kubernetes default: the kubeconfig context's, else `default`].
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
    /// The control plane's admin address (in Kubernetes, through
    /// `kubectl -n weft-system port-forward deploy/weft-control 8085`).
    #[arg(long, visible_alias = "admin", env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
    pub(crate) admin_addr: SocketAddr,
    /// Local mode: the operator token file [default: <ca-dir>/operator-token].
    #[arg(long, env = "WEFT_OPERATOR_TOKEN_FILE")]
    pub(crate) operator_token_file: Option<PathBuf>,
    /// Local mode: the CA directory, where the control plane keeps the operator token
    /// [default: the control plane's default CA directory].
    #[arg(long, env = "WEFT_CA_DIR")]
    pub(crate) ca_dir: Option<PathBuf>,
    /// Kubernetes: a file holding your bearer token (e.g. from `kubectl create token`)
    /// [default: $WEFT_TAP_TOKEN, else the kubeconfig user's token].
    #[arg(long, env = "WEFT_TAP_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Kubernetes: your bearer token itself.
    #[arg(long = "token", env = "WEFT_TAP_TOKEN", hide_env_values = true, hide = true)]
    pub(crate) token: Option<String>,
    /// Kubernetes: the kubeconfig whose user's token to send [default: $KUBECONFIG, else
    /// ~/.kube/config].
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubernetes: the kubeconfig context [default: the current context].
    #[arg(long)]
    pub(crate) context: Option<String>,
}

/// The credential `weft tap` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Local: the operator token.
    OperatorToken,
    /// Kubernetes: the operator's bearer token.
    Kubernetes,
}

impl TapArgs {
    /// The mode the flags ask for, if any.
    fn explicit_mode(&self) -> anyhow::Result<Option<Mode>> {
        let local = self.operator_token_file.is_some() || self.ca_dir.is_some();
        let kube = self.token_file.is_some()
            || self.token.is_some()
            || self.kubeconfig.is_some()
            || self.context.is_some();
        match (local, kube) {
            (true, true) => bail!(
                "--operator-token-file/--ca-dir (a local control plane) and --token-file/--kubeconfig/--context \
                 (Kubernetes) do not go together"
            ),
            (true, false) => Ok(Some(Mode::OperatorToken)),
            (false, true) => Ok(Some(Mode::Kubernetes)),
            (false, false) => Ok(None),
        }
    }
}

/// A bearer token and where it came from (for error messages).
struct Credential {
    token: String,
    source: String,
    /// Kubernetes: the namespace to use when `-n` is not given.
    namespace: Option<String>,
}

/// The operator token of a local control plane.
fn operator_credential(args: &TapArgs) -> anyhow::Result<Credential> {
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
    Ok(Credential { token, source: format!("the operator token {}", token_file.display()), namespace: None })
}

/// The operator's Kubernetes bearer token: `--token-file`, `$WEFT_TAP_TOKEN`, else the
/// kubeconfig user's.
fn kube_credential(args: &TapArgs) -> anyhow::Result<Credential> {
    let kubeconfig = Kubeconfig::load(args.kubeconfig.as_deref());
    let namespace = kubeconfig.as_ref().ok().and_then(|k| k.namespace(args.context.as_deref()));
    if let Some(file) = &args.token_file {
        let token = read_token(file)
            .with_context(|| format!("reading the bearer token {} (--token-file)", file.display()))?;
        anyhow::ensure!(
            !token.is_empty(),
            "the bearer token file {} is empty (--token-file)",
            file.display()
        );
        return Ok(Credential { token, source: format!("--token-file {}", file.display()), namespace });
    }
    if let Some(token) = args.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Credential { token: token.to_owned(), source: "$WEFT_TAP_TOKEN".into(), namespace });
    }
    let kubeconfig = kubeconfig?;
    let (token, source) = kubeconfig.token(args.context.as_deref())?;
    Ok(Credential { token, source, namespace })
}

/// Runs `weft tap`: prints events until the tap ends; exit 1 on an error.
pub(crate) async fn tap(args: &TapArgs) -> anyhow::Result<ExitCode> {
    let addr = args.admin_addr;
    let mode = match args.explicit_mode()? {
        Some(mode) => mode,
        None => ask_mode(addr).await?,
    };
    let credential = match mode {
        Mode::OperatorToken => operator_credential(args)?,
        Mode::Kubernetes => kube_credential(args)?,
    };
    let namespace = match mode {
        Mode::Kubernetes => Some(
            args.namespace
                .clone()
                .or_else(|| credential.namespace.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        Mode::OperatorToken => args.namespace.clone(),
    };
    let query = TapQuery {
        target: args.target.clone(),
        namespace,
        path: args.path.clone(),
        method: args.method.clone(),
        authority: args.authority.clone(),
        to: args.to.clone(),
        max_rps: args.max_rps,
        duration: args.duration.clone(),
    };
    let resp = get(addr, &format!("/tap?{}", serde_urlencoded(&query)), Some(&credential.token)).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_owned();
        match (status.as_u16(), &mode) {
            (401, _) => bail!("{text} (the credential sent: {})", credential.source),
            (403, Mode::Kubernetes) => bail!(
                "{text} (the credential sent: {}; see `kubectl create clusterrolebinding` in docs/kubernetes.md)",
                credential.source
            ),
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

/// `GET path_and_query` on the admin API, with `token` as the bearer token.
async fn get(
    addr: SocketAddr,
    path_and_query: &str,
    token: Option<&str>,
) -> anyhow::Result<http::Response<Incoming>> {
    let mut req = http::Request::get(path_and_query).header(http::header::HOST, addr.to_string());
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| {
        format!(
            "control plane unreachable: connecting to its admin API at {addr} (is `weft control` running? \
             In Kubernetes: `kubectl -n weft-system port-forward deploy/weft-control 8085`)"
        )
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await.context("control plane unreachable")
}

/// Asks the control plane which credential it wants: a request without one is answered 401
/// with `WWW-Authenticate: Bearer realm="..."`.
async fn ask_mode(addr: SocketAddr) -> anyhow::Result<Mode> {
    let resp = get(addr, "/tap", None).await?;
    let status = resp.status();
    let realm = resp
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(realm)
        .map(str::to_owned);
    let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    match realm.as_deref() {
        Some(REALM_OPERATOR_TOKEN) => Ok(Mode::OperatorToken),
        Some(REALM_KUBERNETES) => Ok(Mode::Kubernetes),
        Some(other) => bail!("the control plane at {addr} asks for an unknown credential (realm {other:?})"),
        None if !status.is_success() && !text.is_empty() => bail!("{text}"),
        None => bail!(
            "the control plane at {addr} did not say which credential it wants (status {status}); \
             pass --ca-dir (local) or --token-file (Kubernetes)"
        ),
    }
}

/// The realm of a `Bearer realm="..."` challenge.
fn realm(challenge: &str) -> Option<&str> {
    let rest = challenge.trim().strip_prefix("Bearer")?.trim_start();
    let value = rest.split(',').map(str::trim).find_map(|p| p.strip_prefix("realm="))?;
    Some(value.trim_matches('"'))
}

/// What `weft tap` reads of a kubeconfig: contexts (user, namespace) and users (how they
/// authenticate). Several files (`$KUBECONFIG=a:b`) merge with the first definition winning.
#[derive(Debug, Default, serde::Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
    /// Where it was read from (for error messages).
    #[serde(skip)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: ContextEntry,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ContextEntry {
    #[serde(default)]
    user: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: UserEntry,
}

#[derive(Debug, Default, serde::Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<String>,
    #[serde(default)]
    exec: Option<serde_yaml_ng::Value>,
    #[serde(rename = "auth-provider", default)]
    auth_provider: Option<serde_yaml_ng::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml_ng::Value>,
}

impl Kubeconfig {
    /// `path`, else the files of `$KUBECONFIG`, else `~/.kube/config`.
    fn load(path: Option<&Path>) -> anyhow::Result<Kubeconfig> {
        let files: Vec<PathBuf> = match path {
            Some(path) => vec![path.to_path_buf()],
            None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(list) => std::env::split_paths(&list).collect(),
                None => {
                    let home = std::env::var_os("HOME").context("no --kubeconfig, $KUBECONFIG or $HOME")?;
                    vec![PathBuf::from(home).join(".kube/config")]
                }
            },
        };
        let mut merged = Kubeconfig::default();
        for file in &files {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                // kubectl skips missing files of $KUBECONFIG; a named one must exist.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.is_none() && files.len() > 1 => {
                    continue;
                }
                Err(e) => bail!("reading the kubeconfig {}: {e}", file.display()),
            };
            let one: Kubeconfig = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("reading the kubeconfig {}", file.display()))?;
            merged.current_context = merged.current_context.or(one.current_context);
            for context in one.contexts {
                if !merged.contexts.iter().any(|c| c.name == context.name) {
                    merged.contexts.push(context);
                }
            }
            for user in one.users {
                if !merged.users.iter().any(|u| u.name == user.name) {
                    merged.users.push(user);
                }
            }
        }
        merged.files = files;
        Ok(merged)
    }

    fn describe(&self) -> String {
        self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(":")
    }

    fn context(&self, name: Option<&str>) -> anyhow::Result<(&str, &ContextEntry)> {
        let name = match name.or(self.current_context.as_deref()).filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => bail!("the kubeconfig {} has no current context (pass --context)", self.describe()),
        };
        let Some(found) = self.contexts.iter().find(|c| c.name == name) else {
            bail!("the kubeconfig {} has no context {name:?}", self.describe());
        };
        Ok((found.name.as_str(), &found.context))
    }

    /// The namespace of the context, if it sets one.
    fn namespace(&self, context: Option<&str>) -> Option<String> {
        self.context(context).ok().and_then(|(_, c)| c.namespace.clone()).filter(|n| !n.is_empty())
    }

    /// The bearer token of the context's user, and where it came from.
    fn token(&self, context: Option<&str>) -> anyhow::Result<(String, String)> {
        let (context_name, context) = self.context(context)?;
        let Some(user) = self.users.iter().find(|u| u.name == context.user) else {
            bail!(
                "the kubeconfig {} has no user {:?} (of context {context_name:?}); pass --token-file",
                self.describe(),
                context.user
            );
        };
        let who = format!("the kubeconfig user {:?} (context {context_name:?})", user.name);
        if let Some(token) = user.user.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            return Ok((token.to_owned(), who));
        }
        if let Some(file) = &user.user.token_file {
            let token = read_token(Path::new(file))
                .with_context(|| format!("reading the tokenFile {file} of {who}"))?;
            return Ok((token, format!("{who}, tokenFile {file}")));
        }
        let how = if user.user.exec.is_some() {
            "an exec plugin"
        } else if user.user.auth_provider.is_some() {
            "an auth provider"
        } else if user.user.other.keys().any(|k| k.starts_with("client-certificate")) {
            "a client certificate"
        } else if user.user.other.contains_key("username") {
            "a user name and password"
        } else {
            "no credential"
        };
        bail!(
            "{who} authenticates with {how}, which weft tap cannot send to the control plane; \
             pass a bearer token with --token-file (e.g. `kubectl create token NAME > tap.token` for a \
             ServiceAccount bound to the weft-tap ClusterRole)"
        )
    }
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn challenges_name_their_realm() {
        assert_eq!(realm("Bearer realm=\"kubernetes\""), Some("kubernetes"));
        assert_eq!(realm("Bearer error=\"x\", realm=\"weft-operator-token\""), Some("weft-operator-token"));
        assert_eq!(realm("Basic realm=\"x\""), None);
    }

    fn kubeconfig(text: &str) -> Kubeconfig {
        let mut k: Kubeconfig = serde_yaml_ng::from_str(text).unwrap();
        k.files = vec![PathBuf::from("kc")];
        k
    }

    #[test]
    fn the_kubeconfig_users_token_is_used_and_other_credentials_explained() {
        let k = kubeconfig(
            "current-context: a\ncontexts:\n- name: a\n  context: {cluster: c, user: alice, namespace: payments}\n\
             - name: b\n  context: {cluster: c, user: kind}\n- name: e\n  context: {cluster: c, user: gke}\n\
             users:\n- name: alice\n  user: {token: abc}\n\
             - name: kind\n  user: {client-certificate-data: eA==, client-key-data: eA==}\n\
             - name: gke\n  user:\n    exec: {command: gke-gcloud-auth-plugin, apiVersion: client.authentication.k8s.io/v1beta1}\n",
        );
        let (token, source) = k.token(None).unwrap();
        assert_eq!(token, "abc");
        assert!(source.contains("\"alice\""), "{source}");
        assert_eq!(k.namespace(None).as_deref(), Some("payments"));
        assert_eq!(k.namespace(Some("b")), None);
        let err = k.token(Some("b")).unwrap_err().to_string();
        assert!(err.contains("a client certificate") && err.contains("--token-file"), "{err}");
        let err = k.token(Some("e")).unwrap_err().to_string();
        assert!(err.contains("an exec plugin") && err.contains("--token-file"), "{err}");
        let err = k.token(Some("zz")).unwrap_err().to_string();
        assert!(err.contains("no context \"zz\""), "{err}");
    }

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
