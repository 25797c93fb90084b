//! The `ws-smol` binary's command-line forms.

#[test]
fn echo_and_client_subcommands() {
    ws_tests::cli::check_cli(env!("CARGO_BIN_EXE_ws-smol"));
}

#[test]
fn hub_client_subcommand_and_served_browser_client() {
    ws_tests::cli::check_hub_client(env!("CARGO_BIN_EXE_ws-smol"));
}

#[test]
fn tls_command_line_forms() {
    ws_tests::cli::check_tls_cli(env!("CARGO_BIN_EXE_ws-smol"));
}

#[test]
fn token_subcommand() {
    ws_tests::cli::check_token_cli(env!("CARGO_BIN_EXE_ws-smol"));
}

#[test]
fn api_key_flag() {
    ws_tests::cli::check_api_key_cli(env!("CARGO_BIN_EXE_ws-smol"));
}

#[test]
fn a_killed_node_leaves_presence() {
    ws_tests::cli::check_killed_node_presence_expires(env!("CARGO_BIN_EXE_ws-smol"));
}
