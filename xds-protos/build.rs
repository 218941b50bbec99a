//! Compiles weft's own protos (identity, tap) against the Envoy protos that
//! ship inside the `envoy-types` package source, so none are copied here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Envoy protos whose messages appear in weft's xDS resources.
const ENVOY_RESOURCES: &[&str] = &[
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
];

fn main() -> Result<()> {
    let own = Path::new("proto");
    let files = [own.join("weft/identity.proto"), own.join("weft/tap.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut includes = vec![own.to_path_buf()];
    includes.extend(envoy_proto_dirs()?);

    // Descriptors of the Envoy resources weft serves, so tools can render
    // them as JSON (config dumps) without a copy of Envoy's protos.
    let envoy = protox::compile(ENVOY_RESOURCES, &includes).context("compiling Envoy descriptors")?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("envoy_descriptor.bin"), prost::Message::encode_to_vec(&envoy))?;

    let fds = protox::compile(&files, &includes).context("compiling weft protos")?;
    let mut config = tonic_prost_build::configure().compile_well_known_types(true);
    for (proto, rust) in [
        (".envoy", "::envoy_types::pb::envoy"),
        (".xds", "::envoy_types::pb::xds"),
        (".udpa", "::envoy_types::pb::udpa"),
        (".validate", "::envoy_types::pb::validate"),
        (".google.rpc", "::envoy_types::pb::google::rpc"),
        (".google.protobuf", "::envoy_types::pb::google::protobuf"),
    ] {
        config = config.extern_path(proto, rust);
    }
    config.compile_fds(fds).context("generating Rust for weft protos")?;
    Ok(())
}

/// The include folders under `envoy-types`' `proto/` directory.
fn envoy_proto_dirs() -> Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var("TARGET").context("TARGET is set by cargo for build scripts")?;
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let out = Command::new(cargo)
        .current_dir(&manifest_dir)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform"])
        .arg(&target)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .context("envoy-types is not in cargo metadata")?;
    let proto_root =
        Path::new(manifest).parent().context("envoy-types manifest has no parent")?.join("proto");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&proto_root)
        .with_context(|| format!("reading {}", proto_root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!("no proto folders under {}", proto_root.display());
    }
    Ok(dirs)
}
