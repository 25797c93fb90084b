//! The browser client's unit tests (`clients/js/test/`, against a scripted
//! WebSocket), run under Node so `cargo test` covers them.

use std::process::Command;

#[test]
fn browser_client_unit_tests_pass_under_node() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("node")
        .args(["--test", "clients/js/test/"])
        .current_dir(root)
        .output()
        .expect("node (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("# fail 0"));
}
