//! Instructions per packet of the pipeline cases under callgrind:
//!
//! ```text
//! cargo build --release -p lvs-benches --example pipeline_callgrind
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*pipeline_callgrind::measure*' \
//!     target/release/examples/pipeline_callgrind [CONNS] [BURSTS]
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep measure
//! ```
//!
//! Each `measure_*` function processes BURSTS bursts of 32 frames of one case (the same
//! fixture and frames as `benches/pipeline.rs`); its inclusive instruction count divided by
//! BURSTS × 32 is the figure per packet. With `LVS_PER_FRAME=1` the frames go through
//! `Worker::process` one at a time instead of `Worker::process_burst`. It also prints its own wall-clock ns/packet, which
//! means little under valgrind but is handy natively.
use std::time::Instant;

use lvs_benches::pipeline::{BURST, Burst, CONNS, FRAME_LEN, FRAMES, Lab, NEW_KEYS};
use lvs_core::{ForwardMethod, Time};

fn cycle(
    lab: &mut Lab,
    burst: &mut Burst,
    frames: &[[u8; FRAME_LEN]],
    ingress: u16,
    bursts: usize,
    clock: &mut u64,
) -> usize {
    let mut fwd = 0;
    let mut i = 0;
    for _ in 0..bursts {
        fwd += burst.run(
            &mut lab.worker,
            &frames[i..i + BURST],
            ingress,
            Time::from_millis(*clock),
        );
        *clock += 1;
        i = (i + BURST) % frames.len();
    }
    fwd
}

#[inline(never)]
fn measure_nat_established(
    lab: &mut Lab,
    b: &mut Burst,
    f: &[[u8; FRAME_LEN]],
    n: usize,
    c: &mut u64,
) -> usize {
    std::hint::black_box(1);
    cycle(lab, b, f, 0, n, c)
}
#[inline(never)]
fn measure_fullnat_established(
    lab: &mut Lab,
    b: &mut Burst,
    f: &[[u8; FRAME_LEN]],
    n: usize,
    c: &mut u64,
) -> usize {
    std::hint::black_box(2);
    cycle(lab, b, f, 0, n, c)
}
#[inline(never)]
fn measure_dr_established(
    lab: &mut Lab,
    b: &mut Burst,
    f: &[[u8; FRAME_LEN]],
    n: usize,
    c: &mut u64,
) -> usize {
    std::hint::black_box(3);
    cycle(lab, b, f, 0, n, c)
}
#[inline(never)]
fn measure_tun_established(
    lab: &mut Lab,
    b: &mut Burst,
    f: &[[u8; FRAME_LEN]],
    n: usize,
    c: &mut u64,
) -> usize {
    std::hint::black_box(4);
    cycle(lab, b, f, 0, n, c)
}
#[inline(never)]
fn measure_nat_reply(lab: &mut Lab, b: &mut Burst, f: &[[u8; FRAME_LEN]], n: usize, c: &mut u64) -> usize {
    std::hint::black_box(5);
    cycle(lab, b, f, 1, n, c)
}
/// New connections: only the bursts are measured, not the removal after each.
#[inline(never)]
fn measure_nat_new_conn(lab: &mut Lab, b: &mut Burst, f: &[[u8; FRAME_LEN]], now: Time) -> usize {
    if std::env::var_os("LVS_PER_FRAME").is_some() {
        b.run_each(&mut lab.worker, f, 0, now)
    } else {
        b.run(&mut lab.worker, f, 0, now)
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("number"))
        .collect();
    let conns = args.first().copied().unwrap_or(CONNS);
    let bursts = args.get(1).copied().unwrap_or(1000).min(NEW_KEYS / BURST);
    let t = Instant::now();
    let mut lab = Lab::with_conns(conns, 0x5eed);
    eprintln!("fixture: {} connections in {:.1?}", lab.conns.len(), t.elapsed());
    let mut burst = Burst::new();
    let mut clock = lab.base.as_millis() + 1;
    let packets = (bursts * BURST) as f64;
    let report = |id: &str, fwd: usize, t: Instant| {
        println!(
            "{id:<22} {fwd} of {packets} forwarded, {:.1} ns/packet (wall clock)",
            t.elapsed().as_nanos() as f64 / packets
        );
    };
    type Measure = fn(&mut Lab, &mut Burst, &[[u8; FRAME_LEN]], usize, &mut u64) -> usize;
    let cases: [(&str, ForwardMethod, Measure); 4] = [
        ("nat/established", ForwardMethod::Masq, measure_nat_established),
        (
            "fullnat/established",
            ForwardMethod::FullNat,
            measure_fullnat_established,
        ),
        (
            "dr/established",
            ForwardMethod::DirectRoute,
            measure_dr_established,
        ),
        ("tun/established", ForwardMethod::Tunnel, measure_tun_established),
    ];
    for (id, method, measure) in cases {
        let frames = lab.established_frames(method)[..FRAMES].to_vec();
        let t = Instant::now();
        let fwd = measure(&mut lab, &mut burst, &frames, bursts, &mut clock);
        report(id, fwd, t);
    }
    let frames = lab.nat_reply.clone();
    let t = Instant::now();
    let fwd = measure_nat_reply(&mut lab, &mut burst, &frames, bursts, &mut clock);
    report("nat/reply", fwd, t);

    let now = Time::from_millis(lab.base.as_millis() + 1);
    let syns = lab.new_syns.clone();
    let mut fwd = 0;
    let mut elapsed = std::time::Duration::ZERO;
    for k in (0..bursts * BURST).step_by(BURST) {
        let t = Instant::now();
        fwd += measure_nat_new_conn(&mut lab, &mut burst, &syns[k..k + BURST], now);
        elapsed += t.elapsed();
        for key in &lab.new_keys[k..k + BURST] {
            let c = lab.conns.lookup_in(key).expect("created");
            lab.conns.remove(&c, now);
        }
    }
    println!(
        "{:<22} {fwd} of {packets} forwarded, {:.1} ns/packet (wall clock)",
        "nat/new_conn",
        elapsed.as_nanos() as f64 / packets
    );
}
