//! Real TLS peers against both runtimes' wss echo: Python's `websockets`
//! (an `ssl` context trusting the test CA) and Node's `ws`. Both come from
//! `scripts/install-deps.sh` (Debian's python3-websockets, and `ws` from
//! npm under `~/.cache/ws-peers`, or `$WS_PEERS_HOME`).

use std::path::{Path, PathBuf};
use std::process::Command;

use ws_tests::tls::Pki;
use ws_tests::*;

/// Where install-deps.sh put the Node packages.
fn node_modules() -> PathBuf {
    let home = std::env::var_os("WS_PEERS_HOME").map_or_else(
        || Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/ws-peers"),
        PathBuf::from,
    );
    home.join("node_modules")
}

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// Runs a peer client against `url`; panics with its output on failure.
fn run_peer(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run ({e}); scripts/install-deps.sh installs it")
    });
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{what}");
}

#[test]
fn python_websockets_and_node_ws_talk_wss_to_both_runtimes() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    for srv in RUNTIMES {
        let server = start_tls_echo(srv, pki.server(None));
        let url = format!("wss://localhost:{}/peer", server.addr.port());

        // Debian's interpreter: python3-websockets is installed for it.
        let mut python = Command::new("/usr/bin/python3");
        python.arg(peer_script("wss_client.py")).arg(&url).arg(&ca);
        run_peer(python, &format!("python websockets -> {srv:?}"));

        let mut node = Command::new("node");
        node.arg(peer_script("wss_client.js"))
            .arg(&url)
            .arg(&ca)
            .env("NODE_PATH", node_modules());
        run_peer(node, &format!("node ws -> {srv:?}"));
    }
}
