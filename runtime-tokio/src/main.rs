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
    // The application runs as a task, not as `block_on`'s own future: waking
    // that future (the accept loop, once per connection) unparks the driver
    // with an eventfd write, where waking a task on its own thread does not.
    let code = runtime.block_on(async {
        match tokio::spawn(run(runtime_tokio::TokioRuntime, cli)).await {
            Ok(code) => code,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => 1,
        }
    });
    // Background tasks (lingering connections) must not delay the exit.
    runtime.shutdown_background();
    std::process::exit(code);
}
