//! `weft check`: reads `/debug/identity` and `/debug/proxies` from a running control plane and
//! reports whether every certificate the mesh depends on is valid and not about to expire.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use weft_control::admin::identity::{CertReport, IdentityReport, IssuedReport, ProxyIdentityReport};
use weft_control::identity::format_seconds;

/// A certificate with less than this fraction of its lifetime left is a warning.
const WARN_FRACTION: f64 = 0.10;

/// Arguments of `weft check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The control plane's admin address.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
    admin_addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    /// Worth knowing, not a problem.
    Note,
    Warn,
    Error,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "ok   ",
            Level::Note => "note ",
            Level::Warn => "WARN ",
            Level::Error => "ERROR",
        }
    }
}

/// The report being written, and the worst level seen.
#[derive(Debug, Default)]
struct Report {
    text: String,
    warnings: usize,
    errors: usize,
}

impl Report {
    fn heading(&mut self, title: &str) {
        let _ = writeln!(self.text, "\n{title}");
    }

    fn line(&mut self, level: Level, message: &str) {
        match level {
            Level::Ok | Level::Note => {}
            Level::Warn => self.warnings += 1,
            Level::Error => self.errors += 1,
        }
        let _ = writeln!(self.text, "  {} {message}", level.tag());
    }
}

/// UTC calendar time of `secs` since the epoch, `YYYY-MM-DDTHH:MM:SSZ`.
fn timestamp(secs: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX)) else {
        return format!("@{secs}");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Judges a validity window as of `now`: expired or not yet valid is an error, less than 10 %
/// of the lifetime left a warning. Returns the level and a description.
fn validity(not_before: u64, not_after: u64, now: u64) -> (Level, String) {
    let lifetime = not_after.saturating_sub(not_before);
    let left = i64::try_from(not_after).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
    let until = timestamp(not_after);
    if now < not_before {
        return (Level::Error, format!("not valid before {}", timestamp(not_before)));
    }
    if left <= 0 {
        return (Level::Error, format!("EXPIRED at {until} ({} ago)", format_seconds(-left)));
    }
    let text = format!(
        "valid until {until} ({} left of {})",
        format_seconds(left),
        format_seconds(i64::try_from(lifetime).unwrap_or(i64::MAX))
    );
    #[allow(clippy::cast_precision_loss)] // Seconds fit an f64 exactly for any real lifetime.
    let fraction = left as f64 / lifetime.max(1) as f64;
    if fraction < WARN_FRACTION {
        (Level::Warn, format!("{text}: less than 10 % of its lifetime left"))
    } else {
        (Level::Ok, text)
    }
}

fn cert_line(report: &mut Report, what: &str, cert: &CertReport, now: u64) {
    let (level, text) = validity(cert.cert.not_before, cert.cert.not_after, now);
    report.line(level, &format!("{what} (serial {}): {text}", short_serial(&cert.cert.serial)));
}

fn short_serial(serial: &str) -> &str {
    serial.get(..12).unwrap_or(serial)
}

/// The certificate a proxy is judged by: the newer of the one it connected with and the
/// latest issued for its identity.
enum ProxyCert<'a> {
    Presented(&'a CertReport),
    Issued(&'a IssuedReport),
}

fn newest(proxy: &ProxyIdentityReport) -> Option<ProxyCert<'_>> {
    match (&proxy.presented, &proxy.latest_issued) {
        (Some(p), Some(i)) if i.issuance.not_after > p.cert.not_after => Some(ProxyCert::Issued(i)),
        (Some(p), _) => Some(ProxyCert::Presented(p)),
        (None, Some(i)) => Some(ProxyCert::Issued(i)),
        (None, None) => None,
    }
}

fn render(identity: &IdentityReport, proxies: &[serde_json::Value], admin: SocketAddr) -> Report {
    let mut report = Report::default();
    let now = identity.now;
    let _ = writeln!(
        report.text,
        "weft check: control plane at {admin}, trust domain {}, {}",
        identity.trust_domain,
        if identity.mtls { "mTLS" } else { "PLAINTEXT (--insecure-plaintext)" }
    );
    // Pod IPs from /debug/proxies, by connection number.
    let pod_ips: BTreeMap<u64, String> = proxies
        .iter()
        .filter_map(|p| {
            let conn = p.get("connection")?.as_u64()?;
            let ip = p.get("node")?.get("pod_ip")?.as_str()?;
            Some((conn, ip.to_owned()))
        })
        .collect();

    if identity.mtls {
        report.heading(&format!("CA ({})", identity.ca_dir.as_deref().unwrap_or("?")));
        if identity.roots.is_empty() {
            report.line(Level::Error, "no root certificate");
        }
        for (i, root) in identity.roots.iter().enumerate() {
            let what = if i == 0 { "root" } else { "extra root" };
            cert_line(&mut report, &format!("{what} {:?}", root.cert.subject), root, now);
        }
        if let Some(inter) = &identity.intermediate {
            cert_line(&mut report, &format!("intermediate {:?}", inter.cert.subject), inter, now);
        }

        report.heading("Control plane certificate");
        match &identity.control {
            Some(control) => {
                let name = control.cert.cert.identity.as_deref().unwrap_or("(no SPIFFE ID)");
                cert_line(&mut report, name, &control.cert, now);
                if control.renew_at < now && control.cert.seconds_left > 0 {
                    report.line(Level::Warn, &format!("renewal was due at {}", timestamp(control.renew_at)));
                }
            }
            None => report.line(Level::Error, "no serving certificate"),
        }
    } else {
        report.heading("Certificates");
        report.line(Level::Note, "mTLS is off: proxies talk and fetch xDS in plaintext; nothing to check");
    }

    report.heading(&format!("Proxies ({} connected)", identity.proxies.len()));
    if identity.proxies.is_empty() {
        report.line(Level::Ok, "no proxy is connected");
    }
    for proxy in &identity.proxies {
        let who = format!(
            "{} [{}{}] {}",
            proxy.node,
            proxy.stream,
            pod_ips.get(&proxy.connection).map(|ip| format!(", {ip}")).unwrap_or_default(),
            proxy.identity.as_deref().unwrap_or("(invalid identity)")
        );
        if !identity.mtls {
            report.line(Level::Ok, &format!("{who}: plaintext"));
            continue;
        }
        let (level, text) = match newest(proxy) {
            None => (Level::Error, "no certificate issued".to_owned()),
            Some(ProxyCert::Presented(cert)) => {
                let (level, text) = validity(cert.cert.not_before, cert.cert.not_after, now);
                (level, format!("certificate {} {text}", short_serial(&cert.cert.serial)))
            }
            Some(ProxyCert::Issued(issued)) => {
                let (level, text) = validity(issued.issuance.not_before, issued.issuance.not_after, now);
                (level, format!("certificate {} {text}", short_serial(&issued.issuance.serial)))
            }
        };
        report.line(level, &format!("{who}: {text}"));
        if let (Some(presented), Some(id)) = (&proxy.presented, &proxy.identity)
            && presented.cert.identity.as_deref() != Some(id.as_str())
        {
            let shown = presented.cert.identity.as_deref().unwrap_or("none");
            report.line(Level::Error, &format!("{}: connected as {shown}, claims {id}", proxy.node));
        }
    }

    let _ = writeln!(report.text);
    match (report.errors, report.warnings) {
        (0, 0) if !identity.mtls => {
            let _ = writeln!(report.text, "No certificates in use (--insecure-plaintext).");
        }
        (0, 0) => {
            let _ = writeln!(report.text, "All certificates are valid.");
        }
        (errors, warnings) => {
            let _ = writeln!(report.text, "{errors} error(s), {warnings} warning(s).");
        }
    }
    report
}

/// `weft check`: exit 0 when every certificate is valid with time to spare, 1 otherwise.
pub(crate) async fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let identity: IdentityReport = get_json(args.admin_addr, "/debug/identity").await?;
    let proxies: Vec<serde_json::Value> = get_json(args.admin_addr, "/debug/proxies").await?;
    let report = render(&identity, &proxies, args.admin_addr);
    print!("{}", report.text);
    Ok(if report.errors + report.warnings == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn get_json<T: serde::de::DeserializeOwned>(admin: SocketAddr, path: &str) -> anyhow::Result<T> {
    let (status, body) = super::get(admin, path).await?;
    if status != 200 {
        bail!("control plane answered {status} to GET {path}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("reading the answer to GET {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_levels() {
        let day = 86_400;
        assert_eq!(validity(0, day, day / 2).0, Level::Ok);
        assert_eq!(validity(0, day, day - 60).0, Level::Warn);
        assert_eq!(validity(0, day, day).0, Level::Error);
        assert_eq!(validity(100, day, 50).0, Level::Error);
        let (_, text) = validity(0, day, day + 90);
        assert!(text.contains("EXPIRED") && text.contains("1m 30s ago"), "{text}");
    }

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
