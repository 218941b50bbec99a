//! `bench`: weft's benchmarks, figures side by side in one run.
//!
//! `cargo run --release -p weft-integration --bin bench -- dataplane|controlplane|all`
//! prints Markdown tables and writes JSON under `target/bench/`. See
//! `docs/benchmarks.md` for the method and the latest figures.
//!
//! - `dataplane`: a direct connection, a weft-proxy pair and a stock Envoy pair on
//!   loopback, open loop with mTLS off and on, then max throughput on one core.
//! - `controlplane`: the control plane under many ADS clients.
//! - `all`: `dataplane`, then `controlplane`, each with its defaults.

mod controlplane;
mod dataplane;
mod h2load;
mod openloop;
mod procstat;
mod server;

/// Under `cargo run`, builds the proxy binaries the bench starts (weft-proxy, weft-agent)
/// in the bench's own profile, so they are never missing or stale; elsewhere they must
/// already sit next to the bench binary.
fn build_proxies() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else { return Ok(()) };
    let exe = std::env::current_exe()?;
    let release = exe.parent().and_then(|d| d.file_name()).is_some_and(|n| n == "release");
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "-p", "weft-proxy", "--bins"]);
    if release {
        command.arg("--release");
    }
    eprintln!("building the proxies: {command:?}");
    let status = command.status()?;
    anyhow::ensure!(status.success(), "building weft-proxy and weft-agent failed ({status})");
    Ok(())
}

fn usage() -> anyhow::Error {
    anyhow::anyhow!("usage: bench dataplane|controlplane|all [FLAGS]\n{}", dataplane::USAGE)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dataplane") => {
            build_proxies()?;
            dataplane::run(&args[1..]).await
        }
        Some("controlplane") => controlplane::run(&args[1..]).await,
        Some("all") => {
            anyhow::ensure!(
                args.len() == 1,
                "bench all takes no flags: run the parts one by one to pass some"
            );
            dataplane::run(&[]).await?;
            controlplane::run(&[]).await
        }
        _ => Err(usage()),
    }
}
