//! Masking throughput: the fast path against the byte loop and `memcpy`.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use ws_proto::frame::{apply_mask, apply_mask_bytewise};

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [20usize, 1024, 16 * 1024, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        let src = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1));
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), [1, 2, 3, 4], 1));
        });
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| buf.copy_from_slice(black_box(&src)));
        });
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
