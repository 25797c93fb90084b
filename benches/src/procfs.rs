//! Reading a server's CPU time and resident memory from `/proc`.

use std::fs;

/// Linux reports `utime`/`stime` in `USER_HZ` ticks, which is 100 on every
/// supported architecture (it is an ABI constant, independent of `CONFIG_HZ`).
const USER_HZ: u64 = 100;

/// CPU time (user + system) consumed so far by process `pid`, all threads,
/// in microseconds (10 ms resolution).
pub fn cpu_us(pid: u32) -> std::io::Result<u64> {
    let (user, kernel) = cpu_split_us(pid)?;
    Ok(user + kernel)
}

/// CPU time consumed so far by process `pid`, all threads, split into user
/// space (`utime`) and the kernel (`stime`), in microseconds (10 ms
/// resolution: the kernel samples the split at the clock tick).
pub fn cpu_split_us(pid: u32) -> std::io::Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // `comm` (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is `state` (field 3); utime is field 14, stime 15.
    let parse = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| std::io::Error::other("malformed /proc/PID/stat"))
    };
    let tick_us = 1_000_000 / USER_HZ;
    Ok((parse(11)? * tick_us, parse(12)? * tick_us))
}

/// Time the threads of process `pid` have spent runnable but waiting for
/// a CPU (the run-queue delay in `/proc/PID/task/*/schedstat`), in
/// microseconds. On a machine shared with other work, a process that is
/// neither busy nor waiting for this is idle; one that waits here is starved.
pub fn runq_wait_us(pid: u32) -> std::io::Result<u64> {
    let mut ns = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = fs::read_to_string(task?.path().join("schedstat")) else {
            continue; // the thread has just exited
        };
        ns += text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| std::io::Error::other("malformed schedstat"))?;
    }
    Ok(ns / 1000)
}

/// Resident set size (`VmRSS`) of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|_| std::io::Error::other("malformed VmRSS"))?;
            return Ok(kb * 1024);
        }
    }
    Err(std::io::Error::other("no VmRSS in /proc/PID/status"))
}

/// A CPU-time sample of an optional server process, taken at the start of a
/// measured window.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pid: Option<u32>,
    start_us: Option<u64>,
    start_kernel_us: Option<u64>,
    start_wait_us: Option<u64>,
}

impl CpuSample {
    /// Samples the CPU time of `pid` now (no-op if `pid` is `None`).
    pub fn start(pid: Option<u32>) -> Self {
        let split = pid.and_then(|p| cpu_split_us(p).ok());
        let start_wait_us = pid.and_then(|p| runq_wait_us(p).ok());
        Self {
            pid,
            start_us: split.map(|(user, kernel)| user + kernel),
            start_kernel_us: split.map(|(_, kernel)| kernel),
            start_wait_us,
        }
    }

    /// CPU microseconds consumed by the server since [`CpuSample::start`].
    pub fn elapsed_us(&self) -> Option<u64> {
        self.elapsed_split_us().map(|(total, _)| total)
    }

    /// CPU microseconds consumed since [`CpuSample::start`], and of those
    /// the microseconds spent in the kernel, from one reading.
    pub fn elapsed_split_us(&self) -> Option<(u64, u64)> {
        let (user, kernel) = cpu_split_us(self.pid?).ok()?;
        Some((
            (user + kernel).saturating_sub(self.start_us?),
            kernel.saturating_sub(self.start_kernel_us?),
        ))
    }

    /// Microseconds the server's threads spent waiting for a CPU since
    /// [`CpuSample::start`] (see [`runq_wait_us`]).
    pub fn elapsed_wait_us(&self) -> Option<u64> {
        let end = runq_wait_us(self.pid?).ok()?;
        Some(end.saturating_sub(self.start_wait_us?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_adds_up_to_the_total_and_grows_with_work() {
        let me = std::process::id();
        let sample = CpuSample::start(Some(me));
        // Work (arithmetic and system calls) until the kernel's accounting
        // shows at least one tick; bounded, in case it never does.
        let mut x = 0u64;
        let mut total = 0;
        for _ in 0..1_000_000 {
            for _ in 0..1_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let _ = fs::metadata("/proc/self/stat");
            total = sample.elapsed_us().unwrap();
            if total > 0 {
                break;
            }
        }
        std::hint::black_box(x);
        assert!(
            total > 0,
            "no CPU time accounted after a million rounds of work"
        );
        let (total_now, kernel) = sample.elapsed_split_us().unwrap();
        assert!(
            kernel <= total_now,
            "kernel {kernel} us above total {total_now} us"
        );
        let (user, kernel_now) = cpu_split_us(me).unwrap();
        let all = cpu_us(me).unwrap();
        // Read a moment apart: at most a tick or two between them.
        assert!((user + kernel_now).abs_diff(all) <= 20_000);
    }
}
