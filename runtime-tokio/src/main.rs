//! `ws-tokio`: the server and client binary on tokio. See `--help`.

use clap::Parser as _;
use ws_server::cli::{Cli, init_tracing, run};

fn main() {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(runtime_tokio::TokioRuntime, cli));
    // Background tasks (lingering connections) must not delay the exit.
    runtime.shutdown_background();
    std::process::exit(code);
}
