//! Kernel cost of one small write on a loopback TCP socket: `write(2)`
//! against a `writev(2)` of one slice.
//!
//! At depth 1 every echo is one small frame, a single slice. This measures
//! what the system call itself costs in each form, so that the choice in the
//! adapters' `Transport::poll_write_vectored` (one slice goes out with
//! `write`) rests on a figure. The writing thread's CPU time comes from
//! `/proc/thread-self/schedstat` (nanoseconds on the CPU); a second thread
//! drains the other end. Rounds alternate the two forms.
//!
//! ```text
//! taskset -c 1 target/release/write-syscall --rounds 7 --calls 500000
//! ```

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "CPU time per small write on loopback TCP: write(2) against a one-slice writev(2)"
)]
struct Args {
    /// Rounds per form (the forms alternate).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Writes per round.
    #[arg(long, default_value_t = 500_000)]
    calls: usize,
    /// Bytes per write (22: a 16-byte payload in a server frame).
    #[arg(long, default_value_t = 22)]
    size: usize,
}

/// The calling thread's time on the CPU so far, in nanoseconds.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let first = stat
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty /proc/thread-self/schedstat"))?;
    Ok(first.parse()?)
}

/// CPU nanoseconds per call for `calls` writes of `buf`, one slice each.
fn measure(
    stream: &mut TcpStream,
    buf: &[u8],
    calls: usize,
    vectored: bool,
) -> anyhow::Result<f64> {
    let start = thread_cpu_ns()?;
    for _ in 0..calls {
        let n = if vectored {
            stream.write_vectored(&[IoSlice::new(buf)])?
        } else {
            stream.write(buf)?
        };
        if n < buf.len() {
            stream.write_all(&buf[n..])?;
        }
    }
    Ok((thread_cpu_ns()? - start) as f64 / calls as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rounds > 0 && args.calls > 0 && args.size > 0,
        "rounds, calls and size must be positive"
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut writer = TcpStream::connect(listener.local_addr()?)?;
    writer.set_nodelay(true)?;
    let (mut reader, _) = listener.accept()?;
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let buf = vec![0x5a_u8; args.size];
    // Warm up both paths (page faults, socket buffers) before measuring.
    measure(&mut writer, &buf, args.calls / 10 + 1, false)?;
    measure(&mut writer, &buf, args.calls / 10 + 1, true)?;
    let (mut plain, mut vectored) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let w = measure(&mut writer, &buf, args.calls, false)?;
        let v = measure(&mut writer, &buf, args.calls, true)?;
        println!(
            "{{\"round\":{round},\"size\":{},\"calls\":{},\"write_ns\":{w:.1},\"writev_ns\":{v:.1}}}",
            args.size, args.calls
        );
        plain.push(w);
        vectored.push(v);
    }
    let (w, v) = (median(&mut plain), median(&mut vectored));
    println!(
        "median over {} rounds: write {w:.1} ns/call [{:.1}-{:.1}], writev (1 slice) {v:.1} ns/call [{:.1}-{:.1}], writev/write {:.3}",
        args.rounds,
        plain[0],
        plain[plain.len() - 1],
        vectored[0],
        vectored[vectored.len() - 1],
        v / w
    );
    drop(writer);
    drain
        .join()
        .map_err(|_| anyhow::anyhow!("drain thread panicked"))?;
    Ok(())
}
