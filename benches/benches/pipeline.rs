//! Packet pipeline benchmarks, per forwarding method: `nat/established`,
//! `fullnat/established`, `dr/established`, `tun/established` (client → VIP ACKs of
//! established connections), `nat/reply` (real server → client ACKs of NAT connections) and
//! `nat/new_conn` (SYNs of new clients: lookup miss, service lookup, wlc over 16 servers,
//! insert, forward).
//!
//! Setup (outside every measurement): one pipeline with a TCP service per method, 16 real
//! servers each, and 1M established connections (a quarter per method) in a table sized for
//! them; 64-byte frames (Ethernet + IPv4 + TCP + 10 data bytes) of random connections,
//! precomputed, 64k per case, cycled in order.
//!
//! **Each iteration is a burst of 32 frames**: criterion's *time* is per burst; the
//! *throughput* line (`Throughput::Elements(32)`) gives packets per second, and time / 32 is
//! the time per packet. Every frame is copied into its receive buffer before it is processed
//! (processing rewrites in place): that 64-byte copy per packet is included, as a real RX
//! path pays it too. The clock advances 1 ms per burst, so every packet also moves its
//! connection's expiry deadline (one store), as it would under live traffic.
//!
//! `nat/new_conn` really creates 32 connections per burst. After each burst, untimed, they
//! are removed again (lookup + remove), and every 256 bursts a housekeeping round recycles
//! their slots, so the table stays at 1M live entries; the cost of removal and recycling is
//! not in the figure (it is housekeeping work, off the packet path).
use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lvs_benches::pipeline::{BURST, Burst, FRAMES, HOUSEKEEPING_EVERY, Lab, NEW_KEYS};
use lvs_core::{ForwardMethod, Time};

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut lab = Lab::new(0x5eed);
    eprintln!(
        "pipeline fixture: {} connections (capacity {}), built in {:.1?}",
        lab.conns.len(),
        lab.conns.capacity(),
        t0.elapsed()
    );
    let mut burst = Burst::new();
    // Clock of the established cases: 1 ms per burst.
    let clock = Cell::new(lab.base.as_millis() + 1);

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));

    let cases = [
        ("nat/established", ForwardMethod::Masq),
        ("fullnat/established", ForwardMethod::FullNat),
        ("dr/established", ForwardMethod::DirectRoute),
        ("tun/established", ForwardMethod::Tunnel),
    ];
    for (id, method) in cases {
        let frames = lab.established_frames(method).to_vec();
        // Sanity: the case forwards every frame.
        let fwd = burst.run(
            &mut lab.worker,
            &frames[..BURST],
            0,
            Time::from_millis(clock.get()),
        );
        assert_eq!(
            fwd, BURST,
            "{id}: every frame forwarded ({:?})",
            burst.verdicts[0]
        );
        let mut i = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                let now = Time::from_millis(clock.get());
                clock.set(clock.get() + 1);
                let n = burst.run(&mut lab.worker, &frames[i..i + BURST], 0, now);
                i = (i + BURST) % FRAMES;
                black_box(n)
            })
        });
    }

    // New connections, removed again after each burst (untimed).
    let new_base = lab.base.as_millis() + 1;
    let mut round = 0u64;
    let mut k = 0;
    let mut since_hk = 0;
    g.bench_function("nat/new_conn", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let now = Time::from_millis(new_base + round);
                let frames = &lab.new_syns[k..k + BURST];
                let start = Instant::now();
                let n = burst.run(&mut lab.worker, frames, 0, now);
                total += start.elapsed();
                assert_eq!(n, BURST, "new connections forwarded ({:?})", burst.verdicts[0]);
                for key in &lab.new_keys[k..k + BURST] {
                    let conn = lab.conns.lookup_in(key).expect("connection created");
                    lab.conns.remove(&conn, now);
                }
                k = (k + BURST) % NEW_KEYS;
                since_hk += 1;
                if since_hk == HOUSEKEEPING_EVERY {
                    since_hk = 0;
                    round += 1;
                    lab.pipeline.housekeeping(now, usize::MAX);
                }
            }
            total
        })
    });

    let mut i = 0;
    let frames = lab.nat_reply.clone();
    let fwd = burst.run(
        &mut lab.worker,
        &frames[..BURST],
        1,
        Time::from_millis(clock.get()),
    );
    assert_eq!(
        fwd, BURST,
        "nat/reply: every frame forwarded ({:?})",
        burst.verdicts[0]
    );
    g.bench_function("nat/reply", |b| {
        b.iter(|| {
            let now = Time::from_millis(clock.get());
            clock.set(clock.get() + 1);
            let n = burst.run(&mut lab.worker, &frames[i..i + BURST], 1, now);
            i = (i + BURST) % FRAMES;
            black_box(n)
        })
    });
    g.finish();
    eprintln!(
        "pipeline: {} connections at the end, drops {:?}",
        lab.conns.len(),
        lab.worker.drops
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
