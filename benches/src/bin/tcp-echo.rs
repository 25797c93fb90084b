//! Plain TCP echo server: the ceiling for echo benchmarks. Every byte read
//! is written back as-is (so WebSocket frames come back still masked).

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ws_benches::server::{self, ServerOpts};

#[derive(Parser, Debug)]
#[command(about = "Plain TCP echo server (the ceiling)")]
struct Args {
    #[command(flatten)]
    server: ServerOpts,
    /// Read buffer per connection, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    buf: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let size = args.buf.max(1);
    server::serve(&args.server, move |mut stream, _| async move {
        let mut buf = vec![0u8; size];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    })?;
    Ok(())
}
