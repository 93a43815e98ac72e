//! Instructions per new connection of a scheduler under callgrind: its pick plus the load
//! accounting of the connection's life (bind as inactive, the move to ESTABLISHED, release),
//! in bursts of 32 as the pipeline does them (32 picks each binding, 32 moves, 32 releases).
//!
//! ```text
//! cargo build --release -p lvs-benches --example sched_callgrind
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*sched_callgrind::measure*' \
//!     target/release/examples/sched_callgrind KIND N [BURSTS]
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep measure
//! ```
//!
//! The inclusive count of `measure` divided by BURSTS × 32 is the figure per connection.
//! KIND is an ipvsadm scheduler name, N the number of destinations (weights and counters as
//! in `benches/sched.rs`).
use lvs_benches::{flows, sched_dests};
use lvs_core::dest::{ConnClass, Destination};
use lvs_core::sched::{self, FlowKey, Scheduler, SchedulerKind};
use lvs_core::{SchedFlags, Time};

const BURST: usize = 32;

/// BURSTS bursts of 32 connections' lives; returns how many were scheduled.
#[inline(never)]
fn measure(s: &dyn Scheduler, dests: &[Destination], flows: &[FlowKey], bursts: usize) -> usize {
    let now = Time::from_secs(1000);
    let mut picked = [0usize; BURST];
    let mut total = 0;
    let mut f = 0;
    for _ in 0..bursts {
        let mut k = 0;
        for _ in 0..BURST {
            f = (f + 1) % flows.len();
            if let Some(p) = s.schedule(dests, &flows[f], now) {
                dests[p].state.bind(ConnClass::Inactive);
                picked[k] = p;
                k += 1;
            }
        }
        for &p in &picked[..k] {
            dests[p].state.reclassify(ConnClass::Inactive, ConnClass::Active);
        }
        for &p in &picked[..k] {
            dests[p].state.unbind(ConnClass::Active);
        }
        total += k;
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind: SchedulerKind = args
        .first()
        .map_or("wlc", String::as_str)
        .parse()
        .expect("scheduler name");
    let n: usize = args.get(1).map_or(16, |a| a.parse().expect("number"));
    let bursts: usize = args.get(2).map_or(1000, |a| a.parse().expect("number"));
    let dests = sched_dests(n, 44);
    let flows = flows(4096, 7);
    let s = sched::build(kind, &dests, SchedFlags::NONE, None);
    let got = std::hint::black_box(measure(&*s, &dests, &flows, bursts));
    println!("{kind}/{n}: {got} of {} connections scheduled", bursts * BURST);
}
