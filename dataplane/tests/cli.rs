//! The `weft-proxy` binary as an operator meets it: `--help` documents every flag
//! and the `WEFT_*` variable that mirrors it (the identity flags of `weft-agent`
//! too), and the variables work. (Building this
//! test also builds the binary that the end-to-end tests in `integration/` run.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every flag of `weft-proxy` and the environment variable that mirrors it.
const FLAGS: &[(&str, &str)] = &[
    ("--xds-addr", "WEFT_XDS_ADDR"),
    ("--node-id", "WEFT_NODE_ID"),
    ("--namespace", "WEFT_NAMESPACE"),
    ("--service-account", "WEFT_SERVICE_ACCOUNT"),
    ("--pod-ip", "WEFT_POD_IP"),
    ("--inbound-port", "WEFT_INBOUND_PORT"),
    ("--outbound-port", "WEFT_OUTBOUND_PORT"),
    ("--admin-addr", "WEFT_ADMIN_ADDR"),
    ("--app-port", "WEFT_APP_PORT"),
    ("--sotw", "WEFT_SOTW"),
];

/// Runs `weft-proxy` with `args` and no `WEFT_*` variable but those in `env`; kills it
/// if it has not exited within ten seconds (`None`).
fn weft_proxy(args: &[&str], env: &[(&str, &str)]) -> Option<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft-proxy"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEFT_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weft-proxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait for weft-proxy").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("weft-proxy's output"))
}

/// The lines of clap's help that describe `flag`: its own line up to the next flag's.
fn help_of(help: &str, flag: &str) -> Option<String> {
    let lines: Vec<&str> = help.lines().collect();
    let names_flag = |l: &str| {
        let l = l.trim_start();
        l.starts_with('-') && l.split([' ', ',', '=']).any(|w| w == flag)
    };
    let start = lines.iter().position(|l| names_flag(l))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('-'))
        .map_or(lines.len(), |n| start + 1 + n);
    Some(lines[start..end].join("\n"))
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let out = weft_proxy(&["--help"], &[]).expect("weft-proxy --help did not exit");
    assert!(out.status.success(), "weft-proxy --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, var) in FLAGS {
        let Some(text) = help_of(&help, flag) else {
            panic!("`weft-proxy --help` does not document {flag}:\n{help}");
        };
        assert!(
            text.contains(&format!("[env: {var}")),
            "`weft-proxy --help` does not name {var} for {flag}:\n{text}"
        );
        let words = text.split_whitespace().filter(|w| !w.starts_with(['-', '<', '['])).count();
        assert!(words >= 3, "{flag} has no real description:\n{text}");
    }
}

#[test]
fn environment_variables_are_read_like_flags() {
    // Everything valid but the pod IP, and given only through the environment: the
    // error proves WEFT_POD_IP was read, and the proxy refuses to start rather than guess.
    let env = [
        ("WEFT_XDS_ADDR", "127.0.0.1:9"),
        ("WEFT_NODE_ID", "cli-test"),
        ("WEFT_NAMESPACE", "shop"),
        ("WEFT_SERVICE_ACCOUNT", "web"),
        ("WEFT_POD_IP", "not-an-ip"),
        ("WEFT_ADMIN_ADDR", "127.0.0.1:0"),
    ];
    let out = weft_proxy(&[], &env).expect("weft-proxy ran on with WEFT_POD_IP=not-an-ip");
    assert!(!out.status.success(), "weft-proxy accepted WEFT_POD_IP=not-an-ip");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("not-an-ip") && ["pod-ip", "pod_ip", "pod ip"].iter().any(|n| err.contains(n)),
        "the error names the value and the flag: {err}"
    );
}

#[test]
fn help_of_finds_a_flags_block() {
    let help = "Options:\n      --pod-ip <POD_IP>\n          The pod IP [env: WEFT_POD_IP=]\n\n  -s, --sotw\n          Use SotW [env: WEFT_SOTW=]\n";
    assert_eq!(
        help_of(help, "--pod-ip").as_deref(),
        Some("      --pod-ip <POD_IP>\n          The pod IP [env: WEFT_POD_IP=]\n")
    );
    assert!(help_of(help, "--sotw").unwrap().contains("WEFT_SOTW"));
    assert_eq!(help_of(help, "--pod"), None);
}

/// Asserts that `bin --help` documents each flag and names its variable.
fn assert_documented(bin: &str, flags: &[(&str, &str)]) {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, var) in flags {
        let text = help_of(&help, flag).unwrap_or_else(|| panic!("{bin} --help lacks {flag}:\n{help}"));
        assert!(text.contains(&format!("[env: {var}")), "{bin}: {flag} does not name {var}:\n{text}");
    }
}

#[test]
fn help_documents_the_identity_flags() {
    let identity = [
        ("--ca-file", "WEFT_CA_FILE"),
        ("--token-file", "WEFT_TOKEN_FILE"),
        ("--trust-domain", "WEFT_TRUST_DOMAIN"),
        ("--control-identity", "WEFT_CONTROL_IDENTITY"),
    ];
    let mut proxy = identity.to_vec();
    proxy.push(("--insecure-plaintext", "WEFT_INSECURE_PLAINTEXT"));
    assert_documented(env!("CARGO_BIN_EXE_weft-proxy"), &proxy);
    let mut agent = identity.to_vec();
    agent.extend([
        ("--xds-addr", "WEFT_XDS_ADDR"),
        ("--namespace", "WEFT_NAMESPACE"),
        ("--service-account", "WEFT_SERVICE_ACCOUNT"),
        ("--sds-socket", "WEFT_SDS_SOCKET"),
        ("--admin-addr", "WEFT_ADMIN_ADDR"),
        ("--log", "WEFT_LOG"),
    ]);
    assert_documented(env!("CARGO_BIN_EXE_weft-agent"), &agent);
}
