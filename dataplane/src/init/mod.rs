//! `weft-proxy init`: the traffic-redirect step that runs before the proxy in a Kubernetes pod.
//!
//! It installs iptables `nat` rules in the pod's network namespace so that the app's inbound
//! TCP reaches the proxy's inbound port (4143) and its outbound TCP the outbound port (4140),
//! with the original destination kept for the proxy to read (`SO_ORIGINAL_DST`). The rules are
//! data ([`Redirect::nat_rules`]); applying them is one `iptables-restore` run.
//!
//! It needs `NET_ADMIN` and `NET_RAW` and the `iptables` binaries (the injected init container
//! has both); it exits once the rules are in place.

mod rules;

use std::io::Write;
use std::process::{Command, Stdio};

pub use rules::{INBOUND_CHAIN, OUTBOUND_CHAIN, PortRange, PortRangeError, Redirect, parse_port_list};

/// Why the rules could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The iptables binary is not installed or not on `PATH`.
    #[error(
        "`{binary}` was not found on PATH: install the iptables package (the weft-proxy image ships it), \
         or pass --iptables-restore / --iptables-save with the binaries' paths"
    )]
    Missing {
        /// The binary looked for.
        binary: String,
    },
    /// The binary could not be run.
    #[error("running `{binary}`: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The binary ran and refused (no `NET_ADMIN`, a kernel without the nat table...).
    #[error("`{binary}` failed ({status}): {stderr}")]
    Failed {
        /// The binary.
        binary: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Arguments of `weft-proxy init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The proxy's inbound port: inbound TCP is redirected to it.
    #[arg(long, env = "WEFT_INBOUND_PORT", default_value_t = 4143)]
    pub inbound_port: u16,
    /// The proxy's outbound port: the app's outbound TCP is redirected to it.
    #[arg(long, env = "WEFT_OUTBOUND_PORT", default_value_t = 4140)]
    pub outbound_port: u16,
    /// The uid the proxy runs as; its own connections are not redirected.
    #[arg(long, env = "WEFT_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Inbound ports that go straight to the app, comma-separated, ranges as `6000-6010`
    /// (the proxy's admin port 4191 is always skipped).
    #[arg(long, env = "WEFT_SKIP_INBOUND_PORTS", value_delimiter = ',')]
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports the app reaches directly, comma-separated, ranges as `6000-6010`.
    #[arg(long, env = "WEFT_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    pub skip_outbound_ports: Vec<PortRange>,
    /// The proxy's admin port, always skipped inbound so probes and scrapes reach it.
    #[arg(long, env = "WEFT_PROXY_ADMIN_PORT", default_value_t = 4191)]
    pub proxy_admin_port: u16,
    /// Print the iptables-restore input instead of applying it.
    #[arg(long, env = "WEFT_INIT_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,
    /// The iptables-restore binary.
    #[arg(long, env = "WEFT_IPTABLES_RESTORE", default_value = "iptables-restore")]
    pub iptables_restore: String,
    /// The iptables-save binary (to see which jumps are already in place).
    #[arg(long, env = "WEFT_IPTABLES_SAVE", default_value = "iptables-save")]
    pub iptables_save: String,
}

impl InitArgs {
    /// The redirection these arguments ask for.
    pub fn redirect(&self) -> Redirect {
        let mut skip_inbound_ports = vec![PortRange::single(self.proxy_admin_port)];
        skip_inbound_ports.extend(self.skip_inbound_ports.iter().copied());
        Redirect {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            proxy_uid: self.proxy_uid,
            skip_inbound_ports,
            skip_outbound_ports: self.skip_outbound_ports.clone(),
        }
    }
}

/// What `weft-proxy init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `--dry-run`: the iptables-restore input, not applied.
    DryRun(String),
    /// Applied; the nat table as `iptables-save -t nat` prints it afterwards.
    Applied(String),
}

/// Runs `weft-proxy init`: reads the nat table, applies the rules with `iptables-restore
/// --noflush` (other chains untouched, weft's own replaced), and reads the table back.
pub fn run(args: &InitArgs) -> Result<Outcome, InitError> {
    let redirect = args.redirect();
    if args.dry_run {
        return Ok(Outcome::DryRun(redirect.restore_input("")));
    }
    let before = run_binary(&args.iptables_save, &["-t", "nat"], None)?;
    let input = redirect.restore_input(&before);
    tracing::info!(rules = %input, "applying the redirect rules");
    run_binary(&args.iptables_restore, &["--noflush"], Some(&input))?;
    let after = run_binary(&args.iptables_save, &["-t", "nat"], None)?;
    Ok(Outcome::Applied(after))
}

/// Runs `binary args`, feeding `stdin`, and returns its stdout.
fn run_binary(binary: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => InitError::Missing { binary: binary.to_string() },
            _ => InitError::Spawn { binary: binary.to_string(), source },
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| InitError::Spawn { binary: binary.to_string(), source })?;
        // Dropping the pipe closes it: iptables-restore reads to EOF.
    }
    let output =
        child.wait_with_output().map_err(|source| InitError::Spawn { binary: binary.to_string(), source })?;
    if !output.status.success() {
        return Err(InitError::Failed {
            binary: binary.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    #[test]
    fn flags_build_the_redirect_with_the_admin_port_always_skipped() {
        let cli = Cli::parse_from([
            "init",
            "--proxy-uid",
            "1337",
            "--skip-inbound-ports",
            "9090,9100-9110",
            "--skip-outbound-ports",
            "5432",
        ]);
        let r = cli.init.redirect();
        assert_eq!(r.proxy_uid, 1337);
        assert_eq!(
            r.skip_inbound_ports,
            [PortRange::single(4191), PortRange::single(9090), PortRange { first: 9100, last: 9110 }]
        );
        assert_eq!(r.skip_outbound_ports, [PortRange::single(5432)]);
        assert_eq!((r.inbound_port, r.outbound_port), (4143, 4140));
    }

    #[test]
    fn dry_run_prints_the_restore_input_without_running_iptables() {
        let cli = Cli::parse_from(["init", "--dry-run", "--iptables-save", "/nonexistent/iptables-save"]);
        let Outcome::DryRun(text) = run(&cli.init).unwrap() else { panic!("not a dry run") };
        assert!(text.contains("-j REDIRECT --to-ports 4143"), "{text}");
    }

    #[test]
    fn a_missing_iptables_binary_is_a_clear_error() {
        let cli = Cli::parse_from(["init", "--iptables-save", "/nonexistent/iptables-save"]);
        let e = run(&cli.init).unwrap_err();
        assert!(matches!(e, InitError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("install the iptables package"), "{e}");
    }
}
