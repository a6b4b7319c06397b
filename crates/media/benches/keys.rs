//! Per-window key work: deriving a segment's key (server, every window) and
//! decrypting a segment (client, every segment).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tollstream_media::{MasterSecret, decrypt_segment, encrypt_segment};

fn keys(c: &mut Criterion) {
    let master = MasterSecret([7; 32]);
    c.bench_function("derive_segment_key", |b| b.iter(|| master.segment_key(black_box("demo"), black_box(42))));

    // A 10 s segment of the demo's 640x360 video is about 1 MB.
    let key = master.segment_key("demo", 0);
    let ciphertext = encrypt_segment(&key, &vec![0x47u8; 1_000_000]);
    let mut group = c.benchmark_group("decrypt_segment");
    group.throughput(Throughput::Bytes(ciphertext.len() as u64));
    group.bench_function("1MB", |b| b.iter(|| decrypt_segment(&key, black_box(&ciphertext)).unwrap()));
    group.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
