//! Scheduler pick benchmarks.
//!
//! - `sched/<name>/<n>`: one pick among `n` = 8, 16 or 1000 destinations with random
//!   weights and counters, the flow (client address and port) changing every iteration.
//!   Up to a scheduler's scan size (32 for wlc and lc) the pick scans the list; above it
//!   reads a load index.
//! - `sched_bind/<name>/<n>`: a pick plus binding and releasing an active connection on
//!   the picked destination, the counter updates (and index maintenance) a real new
//!   connection pays, for `n` = 16 or 1000.
//! - `sched_burst/<name>/<n>`: a burst of 32 new connections' whole lives on the scheduler:
//!   32 picks each binding its destination (inactive), then 32 moves to ESTABLISHED (active),
//!   then 32 releases; the time is per connection. With lazy load indexes the notifications
//!   of one burst are applied together by the next pick; scanned lists have none.
//!   `benches/examples/sched_callgrind.rs` counts the instructions of the same loop.
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use lvs_benches::{flows, sched_dests};
use lvs_core::dest::ConnClass;
use lvs_core::sched::{self, Scheduler, SchedulerKind};
use lvs_core::{Destination, FlowKey, SchedFlags, Time};

const FLOWS: usize = 4096;

/// Group `group`: for every scheduler kind and pool size in `ns` (destinations from `seed`),
/// one bench whose iteration runs `op` on the next flow.
fn each_kind(
    c: &mut Criterion,
    group: &str,
    ns: &[usize],
    seed: u64,
    flows: &[FlowKey],
    op: impl Fn(&dyn Scheduler, &[Destination], &FlowKey),
) {
    let mut g = c.benchmark_group(group);
    for &n in ns {
        let dests = sched_dests(n, seed);
        for kind in SchedulerKind::ALL {
            // Built just before its run: each build re-registers the load listeners.
            let s = sched::build(kind, &dests, SchedFlags::NONE, None);
            let mut i = 0usize;
            g.bench_function(format!("{}/{n}", kind.name()), |b| {
                b.iter(|| {
                    i = (i + 1) % flows.len();
                    op(&*s, &dests, &flows[i])
                })
            });
        }
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let flows = flows(FLOWS, 7);
    let now = Time::from_secs(1000);

    each_kind(c, "sched", &[8, 16, 1000], 42, &flows, |s, dests, flow| {
        black_box(s.schedule(dests, flow, now));
    });
    // A pick plus the counter updates (and index maintenance) of a connection's life.
    each_kind(c, "sched_bind", &[16, 1000], 43, &flows, |s, dests, flow| {
        if let Some(p) = s.schedule(dests, flow, now) {
            let st = &dests[p].state;
            st.bind(ConnClass::Active);
            st.unbind(ConnClass::Active);
        }
    });

    let mut g = c.benchmark_group("sched_burst");
    for n in [16usize, 1000] {
        let dests = sched_dests(n, 44);
        for kind in [
            SchedulerKind::Wlc,
            SchedulerKind::Lc,
            SchedulerKind::Sed,
            SchedulerKind::Fo,
            SchedulerKind::Wrr,
            SchedulerKind::Twos,
            SchedulerKind::Rr,
        ] {
            let s = sched::build(kind, &dests, SchedFlags::NONE, None);
            let mut i = 0usize;
            let mut picked = Vec::with_capacity(32);
            g.bench_function(format!("{}/{n}", kind.name()), |b| {
                b.iter_custom(|iters| {
                    let t = std::time::Instant::now();
                    for _ in 0..iters.div_ceil(32) {
                        picked.clear();
                        for _ in 0..32 {
                            i = (i + 1) % FLOWS;
                            if let Some(p) = s.schedule(&dests, &flows[i], now) {
                                dests[p].state.bind(ConnClass::Inactive);
                                picked.push(p);
                            }
                        }
                        for &p in &picked {
                            dests[p].state.reclassify(ConnClass::Inactive, ConnClass::Active);
                        }
                        for &p in &picked {
                            dests[p].state.unbind(ConnClass::Active);
                        }
                    }
                    t.elapsed()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
