//! Connection table benchmarks: `lookup_hit/1M`, `lookup_miss/1M`, `insert_remove/1M`,
//! `lookup_hit_2threads/1M` (bursts of 64 through `lookup_in_batch`, per lookup), and
//! `lookup_hit_single/1M` (one `lookup_in` at a time).
//!
//! One table of 1M NAT connections is built once, outside the measurements. Lookup keys are
//! a precomputed random permutation of the inserted keys, so each lookup goes to a cold
//! part of the table as packets of 1M flows would. `lookup_hit_2threads` reports the time
//! per lookup of two threads together (total throughput), so its figure divided into
//! `lookup_hit`'s is the two-thread speed-up.
//!
//! The table's burst stages use its built-in prefetch (x86-64 `prefetcht0`).
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lvs_core::conn::{ConnKeyIn, ConnTable, NewConn};
use lvs_core::{DestState, ForwardMethod, Protocol, Time};

const N: usize = 1 << 20;
const BURST: usize = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(n: u64) -> ConnKeyIn {
    // Clients spread over 10.0.0.0/8, ports from the ephemeral range.
    let ip = Ipv4Addr::from(0x0a00_0000 | (n as u32 & 0x00ff_ffff));
    let port = 32768 + (n >> 24) as u16;
    ConnKeyIn {
        proto: Protocol::Tcp,
        caddr: IpAddr::V4(ip),
        cport: port,
        vaddr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        vport: 80,
    }
}

struct Fixture {
    table: ConnTable,
    dest: Arc<DestState>,
    hits: Vec<ConnKeyIn>,
    misses: Vec<ConnKeyIn>,
}

fn fixture() -> Fixture {
    let table = ConnTable::with_capacity(N + 4096);
    let dest = Arc::new(DestState::new(0, 0));
    let now = Time::from_secs(1);
    let mut ids: Vec<u64> = (0..N as u64).map(|i| i * 7 + 3).collect();
    for &id in &ids {
        let k = key(id);
        let nc = NewConn::new(
            k,
            ForwardMethod::Masq,
            SocketAddr::new([10, 1, 0, 5].into(), 8080),
            &dest,
        );
        table.insert(nc, now).expect("fixture fits");
    }
    table.expire(now, 0);
    // Random order for lookups.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in (1..ids.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    let hits = ids.iter().map(|&id| key(id)).collect();
    let misses = ids.iter().map(|&id| key(id + 1)).collect();
    eprintln!(
        "conntable fixture: {} entries, {:.1} bytes per entry (entry {} B); IPv6: {:.1} bytes per entry (entry {} B)",
        table.len(),
        table.bytes_per_entry(),
        lvs_core::conn::ENTRY_BYTES,
        table.bytes_per_entry_v6(),
        lvs_core::conn::ENTRY_BYTES_V6
    );
    Fixture {
        table,
        dest,
        hits,
        misses,
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("conntable");
    g.throughput(Throughput::Elements(1));

    // Bursts of 64 through `lookup_in_batch`, as a worker looks up its receive burst;
    // reported per lookup.
    g.bench_function("lookup_hit/1M", |b| {
        let mut i = 0;
        let mut out = [None; BURST];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters.div_ceil(BURST as u64) {
                f.table.lookup_in_batch(&f.hits[i..i + BURST], &mut out);
                black_box(&out);
                i = (i + BURST) & (N - 1);
            }
            start.elapsed()
        })
    });

    // One lookup at a time, nothing to overlap with.
    g.bench_function("lookup_hit_single/1M", |b| {
        let mut i = 0;
        b.iter(|| {
            let r = f.table.lookup_in(&f.hits[i]);
            i = (i + 1) & (N - 1);
            black_box(r)
        })
    });

    g.bench_function("lookup_miss/1M", |b| {
        let mut i = 0;
        let mut out = [None; BURST];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters.div_ceil(BURST as u64) {
                f.table.lookup_in_batch(&f.misses[i..i + BURST], &mut out);
                black_box(&out);
                i = (i + BURST) & (N - 1);
            }
            start.elapsed()
        })
    });

    g.bench_function("lookup_hit_2threads/1M", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(2) as usize;
            // Both threads are spawned before the clock starts and released together: the
            // figure is lookups, not thread creation.
            let go = std::sync::Barrier::new(3);
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (f, go) = (&f, &go);
                    s.spawn(move || {
                        let mut i = t * (N / 2);
                        let mut out = [None; BURST];
                        go.wait();
                        for _ in 0..per.div_ceil(BURST) {
                            f.table.lookup_in_batch(&f.hits[i..i + BURST], &mut out);
                            black_box(&out);
                            i = (i + BURST) & (N - 1);
                        }
                    });
                }
                go.wait();
                Instant::now()
            })
            .elapsed()
        })
    });

    // A new flow each iteration: insert, then remove; housekeeping (which recycles the
    // removed slots) runs every 1024 iterations and is part of the measured cost. The fake
    // clock moves 1 ms per 1024 iterations, so after about a million iterations it passes
    // the fixture's NONE timeout and that housekeeping also expires the 1M fixture entries
    // (up to 4096 per call): long runs include that cost too.
    g.bench_function("insert_remove/1M", |b| {
        let mut n: u64 = 0;
        let mut now = Time::from_secs(2);
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let start = Instant::now();
            for _ in 0..iters {
                let k = key(0x4000_0000 + n);
                n += 1;
                let nc = NewConn::new(
                    k,
                    ForwardMethod::Masq,
                    SocketAddr::new([10, 1, 0, 5].into(), 8080),
                    &f.dest,
                );
                let conn = f.table.insert(nc, now).expect("room");
                f.table.remove(&conn, now);
                if n.is_multiple_of(1024) {
                    now = Time::from_millis(now.as_millis() + 1);
                    f.table.expire(now, 4096);
                }
            }
            spent += start.elapsed();
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
