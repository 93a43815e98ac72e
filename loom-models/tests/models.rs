//! Loom models of `lvs_core::conn`'s lock-free pieces, over the very source files of
//! `lvs-core` compiled against loom's atomics. Each model is small (two or three threads,
//! a handful of operations) and bounded in preemptions so that it runs in seconds.

#![allow(dead_code)]

/// What the included sources import as `super::atomic`.
mod atomic {
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
}

#[path = "../../lvs-core/src/conn/freelist.rs"]
mod freelist;
#[path = "../../lvs-core/src/conn/index.rs"]
mod index;
#[path = "../../lvs-core/src/conn/seqlock.rs"]
mod seqlock;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use loom::thread;

/// Runs `f` under loom (at most 3 preemptions per execution) and returns how many
/// executions were explored.
fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    let n = runs.load(std::sync::atomic::Ordering::Relaxed);
    println!("{n} executions explored");
    assert!(n > 1, "the model explored a single interleaving");
    n
}

// ---- index ----------------------------------------------------------------------------
/// Slot-number bits of the model indexes.
const BITS: u32 = 8;

/// A hash whose home is bucket 0 of a two-bucket index, with tag `t` (distinct `t`s give
/// distinct tags) and preferring the bucket half `t % 2`.
fn h(t: u64) -> u64 {
    t << BITS | (t & 1)
}

/// Fills bucket 0 of a fresh two-bucket index with slot numbers `100..100 + SLOTS`, all
/// homed there (half of them spilled out of their preferred half).
fn full_home() -> index::Index {
    let ix = index::Index::for_keys(2, BITS);
    assert_eq!(ix.buckets(), 2);
    for i in 0..index::SLOTS as u64 {
        assert!(ix.insert(h(i + 1), 100 + i as u32));
    }
    ix
}

fn find(ix: &index::Index, hash: u64, idx: u32) -> bool {
    ix.find(hash, |s| (s == idx).then_some(())).is_some()
}

/// A key pushed past its full home bucket stays findable while another key of that bucket
/// is removed and a third one inserted concurrently; afterwards every key present is found
/// and no overflow mark is left beyond the keys still outside their home.
#[test]
fn index_overflowed_key_stays_findable_during_remove_and_insert() {
    model(|| {
        let ix = Arc::new(full_home());
        // The stable key, in bucket 1 behind bucket 0's overflow mark.
        assert!(ix.insert(h(20), 7));
        let r = {
            let ix = ix.clone();
            thread::spawn(move || assert!(ix.remove(h(3), 102)))
        };
        let i = {
            let ix = ix.clone();
            thread::spawn(move || assert!(ix.insert(h(21), 8)))
        };
        assert!(find(&ix, h(20), 7), "stable overflowed key lost");
        assert!(find(&ix, h(1), 100), "stable home key lost");
        r.join().unwrap();
        i.join().unwrap();
        assert!(find(&ix, h(20), 7));
        assert!(find(&ix, h(21), 8));
        assert!(!find(&ix, h(3), 102));
        // Bucket 0 is full again: one mark for each key past it (h(20), and h(21) unless it
        // took the freed slot).
        assert!((1..=2).contains(&ix.overflow_total()));
        assert!(ix.remove(h(20), 7));
        assert!(ix.remove(h(21), 8));
        assert!(!ix.remove(h(21), 8));
        for i in (0..index::SLOTS as u64).filter(|&i| i != 2) {
            assert!(ix.remove(h(i + 1), 100 + i as u32));
        }
        assert_eq!(ix.overflow_total(), 0);
        assert_eq!(ix.spill_total(), 0);
    });
}

/// Two threads race for the last free slot of a bucket: both inserts succeed, one lands in
/// the bucket and the other past it, both are found, and removing both leaves the index
/// with no overflow mark.
#[test]
fn index_two_inserts_race_for_the_last_slot() {
    model(|| {
        let ix = Arc::new(full_home());
        let last = index::SLOTS as u64;
        assert!(ix.remove(h(last), 99 + last as u32));
        let a = {
            let ix = ix.clone();
            thread::spawn(move || assert!(ix.insert(h(40), 40)))
        };
        assert!(ix.insert(h(41), 41));
        assert!(find(&ix, h(41), 41));
        a.join().unwrap();
        assert!(find(&ix, h(40), 40));
        assert!(find(&ix, h(41), 41));
        assert_eq!(ix.overflow_total(), 1);
        let b = {
            let ix = ix.clone();
            thread::spawn(move || assert!(ix.remove(h(40), 40)))
        };
        assert!(ix.remove(h(41), 41));
        b.join().unwrap();
        assert!(!find(&ix, h(40), 40));
        assert!(!find(&ix, h(41), 41));
        assert!(find(&ix, h(2), 101));
        assert_eq!(ix.overflow_total(), 0);
    });
}

// ---- seqlock --------------------------------------------------------------------------
/// One entry: a control word and a two-word key, which a writer changes from (1, 1) in
/// generation 2 to (2, 2) in generation 4 (through the dead generation 3).
struct Seq {
    ctl: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

fn writer(e: &Seq) {
    // Kill (the one winner), then rewrite the dead slot and publish it.
    let mut cur = e.ctl.load(Ordering::Acquire);
    loop {
        match seqlock::retire(&e.ctl, cur) {
            Ok(_) => break,
            Err(c) => cur = c,
        }
    }
    let old = seqlock::begin_write(&e.ctl);
    e.a.store(2, Ordering::Relaxed);
    e.b.store(2, Ordering::Relaxed);
    seqlock::publish(&e.ctl, seqlock::next_live(old, 0));
}

/// A live entry holding (1, 1) in generation 2, and a thread running [`writer`] on it.
fn racing_writer() -> (Arc<Seq>, thread::JoinHandle<()>) {
    let e = Arc::new(Seq {
        ctl: AtomicU64::new(2 * seqlock::GEN_ONE),
        a: AtomicU64::new(1),
        b: AtomicU64::new(1),
    });
    let w = {
        let e = e.clone();
        thread::spawn(move || writer(&e))
    };
    (e, w)
}

/// A reader racing a writer on one entry never accepts a torn key nor a key of another
/// generation than the one it started with.
#[test]
fn seqlock_reader_never_returns_a_torn_key() {
    model(|| {
        let (e, w) = racing_writer();
        for _ in 0..2 {
            let g1 = seqlock::read_begin(&e.ctl);
            if !seqlock::is_live(g1) {
                continue;
            }
            let a = e.a.load(Ordering::Relaxed);
            let b = e.b.load(Ordering::Relaxed);
            if seqlock::read_end(&e.ctl, g1) {
                let want = (seqlock::gen_of(g1) / 2) as u64;
                assert_eq!((a, b), (want, want), "torn or foreign read accepted");
            }
        }
        w.join().unwrap();
    });
}

/// The same race with a reader that skips the acquire fence before re-checking the
/// generation: loom must find the torn read (this proves the model above can fail).
#[test]
#[should_panic(expected = "left == right")]
fn seqlock_without_the_read_fence_is_caught() {
    model(|| {
        let (e, w) = racing_writer();
        let g1 = seqlock::read_begin(&e.ctl);
        if seqlock::is_live(g1) {
            let a = e.a.load(Ordering::Relaxed);
            let b = e.b.load(Ordering::Relaxed);
            if seqlock::gen_of(e.ctl.load(Ordering::Relaxed)) == seqlock::gen_of(g1) {
                let want = (seqlock::gen_of(g1) / 2) as u64;
                assert_eq!((a, b), (want, want));
            }
        }
        w.join().unwrap();
    });
}

// ---- free list ------------------------------------------------------------------------
/// Three slots 0 → 1 → 2. One thread pops a slot and pushes it back (the ABA pattern), the
/// other pops twice. No slot is ever held by two threads at once, and afterwards the list
/// and the holders account for every slot exactly once.
#[test]
fn free_list_never_hands_out_a_slot_twice() {
    model(|| {
        let links: Arc<Vec<AtomicU32>> = Arc::new(vec![
            AtomicU32::new(1),
            AtomicU32::new(2),
            AtomicU32::new(freelist::NIL),
        ]);
        let held: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(false)).collect());
        let fl = Arc::new(freelist::FreeList::new(0));
        let take = |fl: &freelist::FreeList, links: &[AtomicU32], held: &[AtomicBool]| {
            let i = fl.pop(|i| &links[i as usize]);
            if let Some(i) = i {
                assert!(
                    !held[i as usize].swap(true, Ordering::AcqRel),
                    "slot {i} handed out twice"
                );
            }
            i
        };
        let t = {
            let (fl, links, held) = (fl.clone(), links.clone(), held.clone());
            thread::spawn(move || {
                if let Some(i) = take(&fl, &links, &held) {
                    held[i as usize].store(false, Ordering::Release);
                    fl.push(i, &links[i as usize]);
                }
            })
        };
        let x = take(&fl, &links, &held);
        let y = take(&fl, &links, &held);
        t.join().unwrap();
        let mut seen = [0u32; 3];
        for i in [x, y].into_iter().flatten() {
            seen[i as usize] += 1;
        }
        while let Some(i) = fl.pop(|i| &links[i as usize]) {
            seen[i as usize] += 1;
        }
        assert_eq!(seen, [1, 1, 1]);
    });
}

/// Producers push onto a [`freelist::Stack`] while its consumer takes everything: every
/// pushed slot is taken exactly once.
#[test]
fn stack_take_all_loses_nothing() {
    model(|| {
        let links: Arc<Vec<AtomicU32>> = Arc::new((0..3).map(|_| AtomicU32::new(freelist::NIL)).collect());
        let st = Arc::new(freelist::Stack::new());
        let p = {
            let (st, links) = (st.clone(), links.clone());
            thread::spawn(move || {
                st.push(0, &links[0]);
                st.push(1, &links[1]);
            })
        };
        st.push(2, &links[2]);
        let mut seen = [0u32; 3];
        let mut drain = |top: u32| {
            let mut i = top;
            while i != freelist::NIL {
                seen[i as usize] += 1;
                i = links[i as usize].load(Ordering::Relaxed);
            }
        };
        drain(st.take_all());
        p.join().unwrap();
        drain(st.take_all());
        assert_eq!(seen, [1, 1, 1]);
    });
}
