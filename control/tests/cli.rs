//! The `weft` binary as a user meets it: help that documents every flag, and
//! clear errors. (Building this test also builds the binary that the
//! end-to-end tests in `integration/` run.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn weft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft")).args(args).output().expect("run weft")
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    for (cmd, flags) in [
        ("control", &["--manifests", "--xds-addr", "--admin-addr", "--reload-interval-ms"][..]),
        ("apply", &["--filename", "--admin-addr"][..]),
        (
            "envoy-bootstrap",
            &["--node-id", "--namespace", "--service-account", "--pod-ip", "--xds-addr", "--delta", "--sotw"]
                [..],
        ),
    ] {
        let out = weft(&[cmd, "--help"]);
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in flags {
            assert!(help.contains(flag), "`weft {cmd} --help` does not document {flag}:\n{help}");
        }
        assert!(help.contains("[env: WEFT_"), "`weft {cmd} --help` names no WEFT_* variable:\n{help}");
    }
}

#[test]
fn apply_without_a_control_plane_fails_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("split.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n").unwrap();
    // Port 9 on loopback: nothing listens there.
    let out = weft(&["apply", "-f", file.to_str().unwrap(), "--admin-addr", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("127.0.0.1:9") && err.contains("weft control"), "{err}");
}

#[test]
fn control_refuses_a_missing_manifest_directory() {
    let out = weft(&[
        "control",
        "--manifests",
        "/nonexistent/weft",
        "--xds-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/weft") && err.contains("not a directory"), "{err}");
}
