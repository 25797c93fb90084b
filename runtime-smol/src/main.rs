//! `ws-smol`: the server and client binary on smol. See `--help`.

use std::sync::Arc;

use async_executor::Executor;
use clap::Parser as _;
use ws_server::cli::{Cli, init_tracing, run};

fn main() {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let executor = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    // The main thread is one executor thread; the others run until exit.
    for i in 1..threads {
        let (executor, stopped) = (executor.clone(), stopped.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("smol-{i}"))
            .spawn(move || async_io::block_on(executor.run(stopped.recv())));
        if let Err(e) = spawned {
            eprintln!("error: cannot start executor thread: {e}");
            std::process::exit(1);
        }
    }
    let runtime = runtime_smol::SmolRuntime::with_executor(executor.clone());
    let code = async_io::block_on(executor.run(run(runtime, cli)));
    drop(stop);
    std::process::exit(code);
}
