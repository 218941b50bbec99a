//! `weft`: the control plane (`weft control`) and the operator's CLI.

#![forbid(unsafe_code)]

mod cli;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weft_control::bootstrap::{AdsMode, BootstrapConfig, BootstrapTls, XdsTransport, envoy_bootstrap_with};

/// weft: a service mesh. Run the control plane, or talk to one.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
struct Args {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `weft_control=debug`.
    #[arg(long, env = "WEFT_LOG", default_value = "info", global = true)]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "WEFT_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve xDS (and the identity service) from a directory of Kubernetes-style manifests, or
    /// from a Kubernetes cluster (`--source kubernetes`), where it also runs the sidecar
    /// injector and writes status onto the SMI objects.
    Control(Box<cli::ControlArgs>),
    /// Print a workload's identity token (for weft-proxy's or weft-agent's --token-file): the
    /// HMAC-SHA256 of its SPIFFE ID under the CA directory's token key.
    Token(cli::TokenArgs),
    /// Check the mesh's certificates: the CA root, the control plane's certificate and each
    /// connected proxy's; exit status 1 when something is wrong or about to expire.
    /// `--kubernetes` checks the installation in a cluster instead, `--pre` whether a cluster
    /// is ready for `weft install`.
    Check {
        #[command(flatten)]
        local: cli::CheckArgs,
        #[command(flatten)]
        kube: weft_control::kube_check::KubeCheckArgs,
    },
    /// Send manifests to the control plane, which validates them and stores them only if all are valid.
    Apply {
        /// A YAML file, a directory of them, or `-` for standard input.
        #[arg(short = 'f', long = "filename", env = "WEFT_APPLY_FILE")]
        file: PathBuf,
        /// The control plane's admin address.
        #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
        admin_addr: SocketAddr,
    },
    /// Watch live requests of a workload's proxies (through the control plane, with the
    /// operator token locally or your Kubernetes token and RBAC in a cluster): `req` and `rsp`
    /// lines with source, destination, identities and tls.
    Tap(cli::tap::TapArgs),
    /// Golden metrics (success rate, requests per second, p50/p95/p99 latency) per workload,
    /// or per backend of a TrafficSplit with its live share, over a window.
    Stat(cli::stat::StatArgs),
    /// Print an Envoy bootstrap (YAML) that points stock Envoy at the control plane over ADS.
    EnvoyBootstrap {
        /// The proxy's node id, unique in the mesh.
        #[arg(long, env = "WEFT_NODE_ID")]
        node_id: String,
        /// The workload's namespace.
        #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
        namespace: String,
        /// The workload's ServiceAccount.
        #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "default")]
        service_account: String,
        /// The workload's pod IP (locally, its own loopback address); Envoy's listeners bind there.
        #[arg(long, env = "WEFT_POD_IP")]
        pod_ip: IpAddr,
        /// The control plane's xDS address (host:port).
        #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:8086")]
        xds_addr: String,
        /// Envoy's admin address [default: <pod-ip>:4191].
        #[arg(long, env = "WEFT_PROXY_ADMIN_ADDR")]
        admin_addr: Option<SocketAddr>,
        /// Use incremental (Delta) ADS. This is the default.
        #[arg(long, conflicts_with = "sotw")]
        delta: bool,
        /// Use State-of-the-World ADS.
        #[arg(long)]
        sotw: bool,
        /// The weft-agent's SDS socket: Envoy gets its workload certificate and the mesh's trust
        /// bundle there, and uses them for ADS over TLS. Required unless --insecure-plaintext.
        #[arg(long, env = "WEFT_SDS_SOCKET")]
        sds_socket: Option<PathBuf>,
        /// The mesh's trust domain (for the default --control-identity).
        #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
        /// The SPIFFE ID the control plane's certificate must carry
        /// [default: spiffe://<trust-domain>/ns/weft-system/sa/weft-control].
        #[arg(long, env = "WEFT_CONTROL_IDENTITY")]
        control_identity: Option<String>,
        /// ADS without TLS and no workload certificate, for a control plane run with
        /// --insecure-plaintext (debugging only).
        #[arg(long, env = "WEFT_INSECURE_PLAINTEXT", value_parser = clap::builder::BoolishValueParser::new())]
        insecure_plaintext: bool,
    },
    /// Run a manifest directory's mesh on this machine (control plane, demo apps, a proxy
    /// per meshed pod) with steady traffic through it and a live view; Ctrl-C stops it all.
    Up(weft_control::up::UpArgs),
    /// Run the demo app `weft up` uses: an HTTP server that answers with its name.
    DemoApp(weft_control::up::DemoAppArgs),
    /// Print the Kubernetes manifests of a mesh, for `weft install | kubectl apply -f -`.
    Install(weft_control::install::InstallArgs),
    /// Print the objects `weft install` creates, for `weft uninstall | kubectl delete -f -`.
    Uninstall(weft_control::install::UninstallArgs),
    /// Add weft's proxy to the pods in Kubernetes YAML (Pods, Deployments, StatefulSets,
    /// DaemonSets, ReplicaSets, Jobs, CronJobs) as the injector would; other objects pass through.
    Inject(weft_control::inject::OfflineArgs),
}

/// How the printed Envoy bootstrap reaches the control plane.
fn envoy_transport(
    sds_socket: Option<PathBuf>,
    trust_domain: &str,
    control_identity: Option<String>,
    insecure_plaintext: bool,
) -> anyhow::Result<XdsTransport> {
    if insecure_plaintext {
        return Ok(XdsTransport::Plaintext);
    }
    let Some(socket) = sds_socket else {
        anyhow::bail!(
            "--sds-socket is required: Envoy talks to the control plane over TLS with the workload \
             certificate that the weft-agent beside it serves on that socket (`weft-agent --sds-socket PATH`); \
             pass --insecure-plaintext only for a control plane run with --insecure-plaintext"
        );
    };
    let sds_socket =
        std::path::absolute(&socket).with_context(|| format!("--sds-socket {}", socket.display()))?;
    let control_identity = match control_identity {
        Some(id) => id.parse().with_context(|| format!("--control-identity {id:?}"))?,
        None => weft_control::identity::control_identity(trust_domain).context("--trust-domain")?,
    };
    Ok(XdsTransport::Tls(BootstrapTls { sds_socket, control_identity }))
}

fn init_logs(filter: &str, json: bool) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("--log {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Control(control) => {
            init_logs(&args.log, args.log_json)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let config = control.into_config().await?;
                let running = weft_control::server::start(config).await?;
                tracing::info!(xds = %running.xds_addr, admin = %running.admin_addr, webhook = ?running.webhook_addr, "weft control plane serving");
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
                    r = cli::terminate() => r?,
                }
                tracing::info!("shutting down");
                running.shutdown().await;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Apply { file, admin_addr } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(cli::apply(&file, admin_addr))
        }
        Command::Token(token) => cli::token(&token),
        Command::Tap(tap) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(cli::tap::tap(&tap))
        }
        Command::Stat(stat) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(cli::stat::stat(&stat))
        }
        Command::Check { local, kube } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if !kube.wanted() {
                return rt.block_on(cli::check::run(&local));
            }
            let checklist = rt.block_on(kube.run())?;
            print!("{}", checklist.render());
            Ok(if checklist.failures() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::EnvoyBootstrap {
            node_id,
            namespace,
            service_account,
            pod_ip,
            xds_addr,
            admin_addr,
            delta: _,
            sotw,
            sds_socket,
            trust_domain,
            control_identity,
            insecure_plaintext,
        } => {
            let transport = envoy_transport(sds_socket, &trust_domain, control_identity, insecure_plaintext)?;
            let cfg = BootstrapConfig {
                node_id,
                namespace,
                service_account,
                pod_ip,
                xds_addr,
                admin_addr: admin_addr.unwrap_or(SocketAddr::new(pod_ip, 4191)),
                mode: if sotw { AdsMode::Sotw } else { AdsMode::Delta },
            };
            print!("{}", envoy_bootstrap_with(&cfg, &transport)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Up(up_args) => {
            use weft_control::up::{self, Outcome};
            let run_dir = up::create_run_dir()?;
            up::init_logs(&args.log, args.log_json, &run_dir.join("weft.log"))?;
            let rt = tokio::runtime::Runtime::new()?;
            match rt.block_on(up::run(up_args.into_config(run_dir)))? {
                Outcome::Stopped | Outcome::Interrupted => Ok(ExitCode::SUCCESS),
                Outcome::ProxyExited => {
                    eprintln!("error: a proxy exited while traffic ran (see the summary and its log)");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::DemoApp(demo) => {
            init_logs(&args.log, args.log_json)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(weft_control::up::run_demo_app(demo))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Install(install) => {
            print!("{}", install.run()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall(uninstall) => {
            print!("{}", uninstall.run()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Inject(inject) => {
            let (yaml, reports) = inject.run()?;
            print!("{yaml}");
            for report in &reports {
                eprintln!("{report}");
            }
            let failed = weft_control::inject::args::any_failed(&reports);
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_installed_deployment_configures_weft_control_through_its_flags() {
        let command = Args::command();
        let control = command.find_subcommand("control").unwrap();
        let known: Vec<String> = control
            .get_arguments()
            .chain(command.get_arguments())
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        let documents = weft_control::install::InstallOptions::default().documents().unwrap();
        let deployment = documents.iter().find(|d| d.kind == "Deployment").unwrap();
        let env = &deployment.value["spec"]["template"]["spec"]["containers"][0]["env"];
        let names: Vec<&str> = env
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .filter(|n| n.starts_with("WEFT_"))
            .collect();
        assert!(names.contains(&"WEFT_SOURCE") && names.contains(&"WEFT_POD_NAME"), "{names:?}");
        for name in names {
            assert!(
                known.iter().any(|k| k == name),
                "the Deployment sets {name}, which weft control ignores"
            );
        }

        // The Role grants exactly the Lease and Secret weft control uses by default.
        let role = documents.iter().find(|d| d.kind == "Role").unwrap();
        let granted: Vec<&str> = role.value["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|r| r["resourceNames"].as_sequence())
            .flatten()
            .filter_map(|n| n.as_str())
            .collect();
        let default_of = |id: &str| {
            let arg = control.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_default_values()[0].to_string_lossy().into_owned()
        };
        assert!(granted.contains(&default_of("lease_name").as_str()), "{granted:?}");
        assert!(granted.contains(&default_of("ca_secret").as_str()), "{granted:?}");
    }

    #[test]
    fn weft_control_needs_manifests_only_to_read_manifests() {
        let Command::Control(control) = Args::try_parse_from(["weft", "control"]).unwrap().command else {
            panic!("not weft control");
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let e = rt.block_on(control.into_config()).unwrap_err();
        assert_eq!(e.to_string(), "--manifests is required with --source manifests");
        Args::try_parse_from(["weft", "control", "--source", "kubernetes"]).unwrap();
        Args::try_parse_from(["weft", "control", "--manifests", "/tmp"]).unwrap();
    }
}
