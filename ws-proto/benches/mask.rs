//! Masking throughput: the fast path against the byte loop and `memcpy`.
//!
//! For every payload size (20 B, 1 KiB, 16 KiB, 1 MiB, 16 MiB) the group
//! `mask` measures, over the same buffer:
//!
//! - `fast`: [`apply_mask`], the path the decoder uses;
//! - `bytewise`: [`apply_mask_bytewise`], the reference byte loop;
//! - `memcpy`: `copy_from_slice` of a buffer of the same size, which reads
//!   and writes as many bytes as masking in place does, so `fast / memcpy`
//!   is the fraction of memory (or cache) bandwidth the mask reaches.
//!
//! Throughput is in bytes of payload. Runs are kept short (1 s warm-up, 2 s
//! measurement, fewer samples for the large sizes) because the benchmark
//! machine is shared; compare the three figures of one run, not runs.
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ws_proto::frame::{apply_mask, apply_mask_bytewise};

const SIZES: [usize; 5] = [20, 1 << 10, 16 << 10, 1 << 20, 16 << 20];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for size in SIZES {
        group.sample_size(if size >= 1 << 20 { 20 } else { 50 });
        let mut buf = vec![0x5au8; size];
        let src = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 0));
        });
        // An offset that is not a multiple of 4, as when a payload arrives
        // in pieces: the key is rotated once, the loop is the same.
        group.bench_with_input(BenchmarkId::new("fast_offset3", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 3));
        });
        // The byte loop is slow enough that 16 MiB adds nothing but time.
        if size <= 1 << 20 {
            group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
                b.iter(|| apply_mask_bytewise(black_box(&mut buf), KEY, 0));
            });
        }
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| black_box(&mut buf).copy_from_slice(black_box(&src)));
        });
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
