//! AES-256-CTR throughput: the crate's cipher (AWS-LC) next to RustCrypto `aes` 0.8 + `ctr` 0.9,
//! on one core. Run: `cargo bench --bench cipher`; compare with `openssl speed -evp aes-256-ctr`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptobucket::ContentMaterial;

fn bench(c: &mut Criterion) {
    let m = ContentMaterial::from_parts([7u8; 32], [1u8; 16]);
    let mut group = c.benchmark_group("aes-256-ctr");
    for (label, size) in [
        ("64KiB", 64usize << 10),
        ("1MiB", 1 << 20),
        ("16MiB", 16 << 20),
    ] {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &size, |b, _| {
            b.iter(|| m.cipher_at(0).unwrap().apply(&mut buf))
        });
        // A start in the middle of a block (ranged reads): one extra block of keystream.
        group.bench_with_input(BenchmarkId::new("unaligned-start", label), &size, |b, _| {
            b.iter(|| m.cipher_at(5).unwrap().apply(&mut buf))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("rustcrypto-aes-0.8-ctr-0.9");
    use ctr::cipher::{KeyIvInit, StreamCipher};
    type Ctr = ctr::Ctr128BE<aes::Aes256>;
    let size = 1usize << 20;
    let mut buf = vec![0u8; size];
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("1MiB", |b| {
        b.iter(|| Ctr::new(&[7u8; 32].into(), &[1u8; 16].into()).apply_keystream(&mut buf))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
