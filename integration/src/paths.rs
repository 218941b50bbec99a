//! Where cargo put things: the target directory and the binaries built in it.

use std::path::{Path, PathBuf};

/// The workspace's cargo target directory.
///
/// `$CARGO_TARGET_DIR` if set (a relative one is taken from the workspace root, where
/// cargo is normally run); otherwise the nearest ancestor named `target` of the running
/// test executable; otherwise `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let from_env = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    choose_target_dir(from_env, std::env::current_exe().ok(), &workspace_root())
}

fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn choose_target_dir(from_env: Option<PathBuf>, exe: Option<PathBuf>, workspace: &Path) -> PathBuf {
    if let Some(dir) = from_env {
        return if dir.is_absolute() { dir } else { workspace.join(dir) };
    }
    if let Some(exe) = exe
        && let Some(target) = exe.ancestors().find(|p| p.file_name().is_some_and(|n| n == "target"))
    {
        return target.to_path_buf();
    }
    workspace.join("target")
}

/// The `weft` binary (control plane and CLI) that cargo built next to the running test:
/// tests live in `target/<profile>/deps/`, binaries in `target/<profile>/`.
/// `$WEFT_BIN` overrides it.
///
/// It is not built on demand: `cargo test -p weft-integration` builds the library only.
pub fn weft_bin() -> anyhow::Result<PathBuf> {
    built_binary("WEFT_BIN", "weft", "weft-control")
}

/// The `weft-proxy` binary (the sidecar) that cargo built next to the running test.
/// `$WEFT_PROXY_BIN` overrides it.
///
/// Like [`weft_bin`], it is not built on demand: `cargo nextest run --workspace` builds it
/// (for `dataplane/tests/cli.rs`); `cargo nextest run -p weft-integration` does not.
pub fn weft_proxy_bin() -> anyhow::Result<PathBuf> {
    built_binary("WEFT_PROXY_BIN", "weft-proxy", "weft-proxy")
}

/// The `weft-agent` binary (the SDS agent beside stock Envoy, from the `weft-proxy`
/// package) that cargo built next to the running test. `$WEFT_AGENT_BIN` overrides it.
/// Built by `cargo build -p weft-proxy`, like [`weft_proxy_bin`].
pub fn weft_agent_bin() -> anyhow::Result<PathBuf> {
    built_binary("WEFT_AGENT_BIN", "weft-agent", "weft-proxy")
}

/// `$env` if set, else binary `name` next to the running test; an error saying how to
/// build it (`cargo build -p package`) if it is missing.
fn built_binary(env: &str, name: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        anyhow::ensure!(bin.is_file(), "{env}={} does not exist", bin.display());
        return Ok(bin);
    }
    let bin = binary_next_to(&std::env::current_exe()?, name);
    anyhow::ensure!(
        bin.is_file(),
        "the {name} binary is not built: {} is missing; run `cargo build -p {package}` \
         (with the same profile as the tests) first",
        bin.display()
    );
    Ok(bin)
}

/// Where cargo puts binary `name` of the build that produced test executable `exe`.
fn binary_next_to(exe: &Path, name: &str) -> PathBuf {
    let mut dir = exe.parent().unwrap_or(exe);
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_in_the_profile_dir_above_deps() {
        let exe = Path::new("/w/target/debug/deps/harness-0123abcd");
        assert_eq!(binary_next_to(exe, "weft"), Path::new("/w/target/debug/weft"));
        let exe = Path::new("/w/target/release/examples/demo");
        assert_eq!(binary_next_to(exe, "weft"), Path::new("/w/target/release/examples/weft"));
    }

    #[test]
    fn target_dir_prefers_env_then_the_executables_target_ancestor() {
        let ws = Path::new("/w");
        let exe = Some(PathBuf::from("/w/target/debug/deps/harness-1"));
        let abs = Some(PathBuf::from("/elsewhere/tgt"));
        assert_eq!(choose_target_dir(abs, exe.clone(), ws), Path::new("/elsewhere/tgt"));
        let rel = Some(PathBuf::from("tgt"));
        assert_eq!(choose_target_dir(rel, exe.clone(), ws), Path::new("/w/tgt"));
        assert_eq!(choose_target_dir(None, exe, ws), Path::new("/w/target"));
        let odd = Some(PathBuf::from("/opt/tests/harness"));
        assert_eq!(choose_target_dir(None, odd, ws), Path::new("/w/target"));
    }
}
