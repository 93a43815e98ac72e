//! Layout probe for the connection table's burst lookup (issue 3): is a lookup hit bound by
//! page walks (one for the bucket's page, one for the entry's) or by cache misses?
//!
//! ```text
//! cargo build --release -p lvs-benches --example layout_probe
//! target/release/examples/layout_probe [ROUNDS] [PASSES] [VARIANT-FILTER]
//! ```
//!
//! A standalone model of 1M IPv4 connections, built the way `ConnTable` builds them
//! (64-byte buckets of 14 four-byte `tag | slot` slots in two preferred halves, 64-byte
//! entries whose first word is a seqlock control word), looked up in a random order in
//! bursts staged like `ConnTable::lookup_in_batch` (hash all, touch the home buckets, pick
//! candidates, read the control words, verify). Variants:
//!
//! - `sep`: today's layout, a bucket array and a separate entry arena filled in insertion
//!   order, so a lookup touches two random lines in two random pages;
//! - `colo8` / `colo7`: each 4 KB page holds 8 (7) bucket lines and 56 (57) entry lines,
//!   and an entry is placed in the page of its home bucket (any page with room when that
//!   one is full), so a hit touches two lines of one page;
//! - `pf`: prefetch instructions instead of loads in both touch stages (`pfb`: the bucket
//!   stage only, `pfe`: the entry stage only); `bl`: the candidate picked from the home
//!   bucket without data-dependent branches;
//! - `b32` / `b128`: other burst sizes; `pipe`: bursts software-pipelined three deep
//!   (buckets of burst k+2, entries of burst k+1 and checks of burst k in one step);
//! - `huge`: the same memory advised `MADV_HUGEPAGE` before it is first written;
//! - `bkt-only` / `ent-only`: half a lookup (the bucket stage alone; random entry lines
//!   alone), to see whether the two costs add.
//!
//! Each variant is timed for PASSES passes over the 1M keys, rounds alternate the variants,
//! and the figure is ns per lookup (each round, then the median and the minimum).
//! VARIANT-FILTER keeps the variants whose name contains it.
//!
//! What it showed (20:00 UTC, 5 rounds × 2 passes, min / median ns): today's layout 50 / 53,
//! co-located 51 / 57 (so page walks are not the bound); prefetch 31 / 39 (co-located
//! 31 / 35); prefetch plus branch-free candidate 23 / 23 (co-located 23 / 24); huge pages
//! −5 %; bursts of 16 / 32 / 64 / 128 with prefetch 51 / 36 / 31 / 30; a three-deep
//! pipeline of bursts 114 with loads, 29–30 with prefetch. `ConnTable` took the prefetch
//! and the branch-free candidate.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Instant;

const N: usize = 1 << 20;
const CAP: usize = N + 4096;
const MAXB: usize = 128;
const SLOT_BITS: u32 = 22;
const IDX_MASK: u32 = (1 << SLOT_BITS) - 1;
const TAG_ONE: u32 = 1 << SLOT_BITS;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const WANT: u64 = 1 << 30;
const GEN_ONE: u64 = 1 << 40;

#[repr(C, align(64))]
struct Line([AtomicU64; 8]);

#[repr(C, align(4096))]
struct Page([Line; 64]);

/// Lines in 4 KB pages, optionally advised to be backed by huge pages.
struct Mem {
    pages: Box<[Page]>,
}

fn madvise_hugepage(p: *const Page, len: usize) -> isize {
    let ret: isize;
    // SAFETY: madvise(MADV_HUGEPAGE) on our own, page-aligned, not yet touched allocation
    // only changes how the kernel backs it; no memory is read or written.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") 28isize => ret,
            in("rdi") p as usize,
            in("rsi") len,
            in("rdx") 14usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

impl Mem {
    fn new(lines: usize, huge: bool) -> Mem {
        let n = lines.div_ceil(64);
        let mut v: Vec<Page> = Vec::with_capacity(n);
        if huge {
            let r = madvise_hugepage(v.as_ptr(), n * 4096);
            assert_eq!(r, 0, "madvise");
        }
        for _ in 0..n {
            v.push(Page(std::array::from_fn(|_| {
                Line(std::array::from_fn(|_| AtomicU64::new(0)))
            })));
        }
        Mem {
            pages: v.into_boxed_slice(),
        }
    }
    #[inline(always)]
    fn line(&self, i: usize) -> &Line {
        &self.pages[i >> 6].0[i & 63]
    }
    fn bytes(&self) -> usize {
        self.pages.len() * 4096
    }
}

// ---- hashing and the bucket format (as lvs-core's index.rs / table.rs) ---------------
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}
const K: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];
#[inline(always)]
fn hash4(cv: u64, w: u64) -> u64 {
    let x = fold(cv ^ SEED ^ K[0], w ^ K[1]);
    fold(x ^ K[2], K[3] ^ SEED.rotate_left(29))
}
#[inline(always)]
fn tag(h: u64) -> u32 {
    ((h as u32) | TAG_ONE) & !IDX_MASK
}
#[inline(always)]
fn slot(b: &Line, s: usize) -> u32 {
    (b.0[s / 2].load(Ordering::Relaxed) >> (32 * (s & 1))) as u32
}
fn set_slot(b: &Line, s: usize, v: u32) {
    let w = &b.0[s / 2];
    let sh = 32 * (s & 1);
    let old = w.load(Ordering::Relaxed);
    w.store(
        (old & !(0xffff_ffffu64 << sh)) | (v as u64) << sh,
        Ordering::Relaxed,
    );
}
// Word 7 of a bucket: spill of half 0 (bits 0..16), of half 1 (16..32), overflow (32..64).
#[inline(always)]
fn spill(b: &Line, half: usize) -> u64 {
    (b.0[7].load(Ordering::Relaxed) >> (16 * half)) & 0xffff
}
#[inline(always)]
fn overflow(b: &Line) -> u64 {
    b.0[7].load(Ordering::Relaxed) >> 32
}

#[derive(Clone, Copy)]
struct Key {
    cv: u64,
    pw: u64,
}

fn key(id: u64) -> Key {
    let ip = 0x0a00_0000u64 | (id & 0x00ff_ffff);
    let port = 32768 + (id >> 24);
    Key {
        cv: ip | (0xc000_0201u64 << 32),
        pw: port | 80 << 16,
    }
}

/// Where the buckets and entries live.
trait Layout {
    fn nb(&self) -> usize;
    fn bucket(&self, b: usize) -> &Line;
    fn entry(&self, idx: u32) -> &Line;
    /// A free entry slot for a key whose home bucket is `home`.
    fn alloc(&mut self, home: usize) -> u32;
    fn bytes(&self) -> usize;
}

/// Today's layout: bucket array, separate arena filled in insertion order.
struct Sep {
    nb: usize,
    buckets: Mem,
    entries: Mem,
    next: u32,
}

impl Sep {
    fn new(huge: bool) -> Sep {
        let nb = (CAP * 4).div_ceil(27);
        Sep {
            nb,
            buckets: Mem::new(nb, huge),
            entries: Mem::new(CAP + CAP / 8 + 256, huge),
            next: 0,
        }
    }
}

impl Layout for Sep {
    #[inline(always)]
    fn nb(&self) -> usize {
        self.nb
    }
    #[inline(always)]
    fn bucket(&self, b: usize) -> &Line {
        self.buckets.line(b)
    }
    #[inline(always)]
    fn entry(&self, idx: u32) -> &Line {
        self.entries.line(idx as usize)
    }
    fn alloc(&mut self, _home: usize) -> u32 {
        self.next += 1;
        self.next - 1
    }
    fn bytes(&self) -> usize {
        self.buckets.bytes() + self.entries.bytes()
    }
}

/// Co-located layout: NBP bucket lines then 64 - NBP entry lines per 4 KB page; slot
/// numbers are line numbers.
struct Colo<const NBP: usize> {
    nb: usize,
    mem: Mem,
    used: Vec<u8>,
    cursor: usize,
    overflowed: usize,
}

impl<const NBP: usize> Colo<NBP> {
    fn new(huge: bool) -> Self {
        let nb = (CAP * 4).div_ceil(27);
        let pages = nb.div_ceil(NBP);
        Colo {
            nb,
            mem: Mem::new(pages * 64, huge),
            used: vec![0; pages],
            cursor: 0,
            overflowed: 0,
        }
    }
}

impl<const NBP: usize> Layout for Colo<NBP> {
    #[inline(always)]
    fn nb(&self) -> usize {
        self.nb
    }
    #[inline(always)]
    fn bucket(&self, b: usize) -> &Line {
        self.mem.line((b / NBP) * 64 + b % NBP)
    }
    #[inline(always)]
    fn entry(&self, idx: u32) -> &Line {
        self.mem.line(idx as usize)
    }
    fn alloc(&mut self, home: usize) -> u32 {
        let mut p = home / NBP;
        if self.used[p] as usize == 64 - NBP {
            self.overflowed += 1;
            while self.used[self.cursor] as usize == 64 - NBP {
                self.cursor += 1;
            }
            p = self.cursor;
        }
        self.used[p] += 1;
        (p * 64 + NBP + self.used[p] as usize - 1) as u32
    }
    fn bytes(&self) -> usize {
        self.mem.bytes()
    }
}

#[inline(always)]
fn home<L: Layout>(t: &L, h: u64) -> usize {
    (((h >> 32) * t.nb() as u64) >> 32) as usize
}

fn insert<L: Layout>(t: &mut L, k: Key) {
    let h = hash4(k.cv, k.pw | WANT);
    let hb = home(t, h);
    let idx = t.alloc(hb);
    let e = t.entry(idx);
    e.0[0].store((2 * GEN_ONE) | WANT, Ordering::Relaxed);
    e.0[1].store(k.cv, Ordering::Relaxed);
    e.0[2].store(0x0a01_0005, Ordering::Relaxed);
    e.0[3].store(k.pw | 8080 << 32, Ordering::Relaxed);
    let v = tag(h) | idx;
    let p = (h & 1) as usize;
    let b = t.bucket(hb);
    for s in p * 7..p * 7 + 7 {
        if slot(b, s) == 0 {
            return set_slot(b, s, v);
        }
    }
    for s in (1 - p) * 7..(1 - p) * 7 + 7 {
        if slot(b, s) == 0 {
            b.0[7].fetch_add(1 << (16 * p), Ordering::Relaxed);
            return set_slot(b, s, v);
        }
    }
    let mut c = hb;
    loop {
        t.bucket(c).0[7].fetch_add(1 << 32, Ordering::Relaxed);
        c = (c + 1) % t.nb();
        let b = t.bucket(c);
        if let Some(s) = (0..14).find(|&s| slot(b, s) == 0) {
            return set_slot(b, s, v);
        }
    }
}

/// The home-bucket candidate and whether the probe may go further.
#[inline(always)]
fn home_candidate<L: Layout>(t: &L, h: u64) -> (u32, bool) {
    let tg = tag(h);
    let b = t.bucket(home(t, h));
    let p = (h & 1) as usize;
    let mut found = u32::MAX;
    let mut more = false;
    let mut scan = |half: usize| {
        for s in half * 7..half * 7 + 7 {
            let v = slot(b, s);
            if v & !IDX_MASK == tg {
                more |= found != u32::MAX;
                found = v & IDX_MASK;
            }
        }
    };
    scan(p);
    if spill(b, p) != 0 {
        scan(1 - p);
    }
    (found, more || overflow(b) != 0)
}

/// [`home_candidate`] without data-dependent branches on the slots.
#[inline(always)]
fn home_candidate_bl<L: Layout>(t: &L, h: u64) -> (u32, bool) {
    let tg = tag(h);
    let b = t.bucket(home(t, h));
    let p = (h & 1) as usize;
    let w7 = b.0[7].load(Ordering::Relaxed);
    let mut mask = 0u32;
    let mut vals = [0u32; 14];
    for (s, v) in vals.iter_mut().enumerate() {
        *v = slot(b, s);
        mask |= ((*v & !IDX_MASK == tg) as u32) << s;
    }
    let pref = 0x7fu32 << (7 * p);
    let spilled = (w7 >> (16 * p)) & 0xffff != 0;
    let mask = mask & if spilled { 0x3fff } else { pref };
    let sel = if mask & pref != 0 { mask & pref } else { mask };
    let first = sel.trailing_zeros();
    let found = if mask == 0 {
        u32::MAX
    } else {
        vals[(first as usize).min(13)] & IDX_MASK
    };
    (found, mask.count_ones() > 1 || w7 >> 32 != 0)
}

/// The seqlock read of a candidate against a key.
#[inline(always)]
fn verify<L: Layout>(t: &L, idx: u32, g1: u64, k: &Key) -> bool {
    let e = t.entry(idx);
    if (g1 >> 40) & 1 != 0 || g1 & (0xf << 30) != WANT {
        return false;
    }
    if e.0[1].load(Ordering::Relaxed) != k.cv || e.0[3].load(Ordering::Relaxed) & 0xffff_ffff != k.pw {
        return false;
    }
    let _dl = e.0[2].load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    e.0[0].load(Ordering::Relaxed) >> 40 == g1 >> 40
}

/// Full probe (the slow path): every matching slot of the home bucket and those after it.
fn find<L: Layout>(t: &L, h: u64, k: &Key) -> u32 {
    let tg = tag(h);
    let mut b = home(t, h);
    for _ in 0..t.nb() {
        let bk = t.bucket(b);
        for s in 0..14 {
            let v = slot(bk, s);
            if v & !IDX_MASK == tg {
                let idx = v & IDX_MASK;
                if verify(t, idx, t.entry(idx).0[0].load(Ordering::Acquire), k) {
                    return idx;
                }
            }
        }
        if overflow(bk) == 0 {
            break;
        }
        b = (b + 1) % t.nb();
    }
    u32::MAX
}

#[inline(always)]
fn prefetch(l: &Line) {
    // SAFETY: a prefetch of a valid reference's address has no effect on memory.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(l as *const Line as *const i8)
    }
}

/// One burst staged like `lookup_in_batch`: `pf` uses prefetch instructions instead of
/// loads in the touch stages. Returns the number of hits.
#[inline(always)]
fn burst<L: Layout>(t: &L, keys: &[Key], mode: Mode) -> usize {
    let Mode { pfb, pfe, bl } = mode;
    let m = keys.len();
    let mut hs = [0u64; MAXB];
    for j in 0..m {
        hs[j] = hash4(keys[j].cv, keys[j].pw | WANT);
    }
    let mut sink = 0u64;
    for &h in &hs[..m] {
        let b = t.bucket(home(t, h));
        if pfb {
            prefetch(b);
        } else {
            sink ^= b.0[7].load(Ordering::Relaxed);
        }
    }
    let mut cand = [(u32::MAX, false); MAXB];
    for j in 0..m {
        cand[j] = if bl {
            home_candidate_bl(t, hs[j])
        } else {
            home_candidate(t, hs[j])
        };
    }
    let mut g1 = [0u64; MAXB];
    for j in 0..m {
        if cand[j].0 != u32::MAX {
            let e = t.entry(cand[j].0);
            if pfe {
                prefetch(e);
            } else {
                g1[j] = e.0[0].load(Ordering::Acquire);
            }
        }
    }
    let mut hits = 0;
    for j in 0..m {
        let (idx, more) = cand[j];
        let ok = idx != u32::MAX && {
            let g = if pfe {
                t.entry(idx).0[0].load(Ordering::Acquire)
            } else {
                g1[j]
            };
            verify(t, idx, g, &keys[j])
        };
        if ok || (more && find(t, hs[j], &keys[j]) != u32::MAX) {
            hits += 1;
        }
    }
    black_box(sink);
    hits
}

/// Per-burst state of the software pipeline.
struct Stage {
    hs: [u64; MAXB],
    cand: [(u32, bool); MAXB],
    g1: [u64; MAXB],
}

/// Bursts of `B` software-pipelined three deep: in one step the home buckets of burst k+2
/// are touched, the candidates of burst k+1 picked and their entries touched, and burst k
/// checked.
fn run_pipe<L: Layout, const B: usize>(t: &L, keys: &[Key], lookups: usize, mode: Mode) -> usize {
    let mut st: [Stage; 3] = std::array::from_fn(|_| Stage {
        hs: [0; MAXB],
        cand: [(u32::MAX, false); MAXB],
        g1: [0; MAXB],
    });
    let nb = lookups / B;
    let kb = |k: usize| &keys[(k * B) % N..(k * B) % N + B];
    let mut hits = 0;
    let mut sink = 0u64;
    for k in 0..nb + 2 {
        // Stage 1 for burst k: hash and touch buckets.
        if k < nb {
            let s = &mut st[k % 3];
            for (j, key) in kb(k).iter().enumerate() {
                s.hs[j] = hash4(key.cv, key.pw | WANT);
                let b = t.bucket(home(t, s.hs[j]));
                if mode.pfb {
                    prefetch(b);
                } else {
                    sink ^= b.0[7].load(Ordering::Relaxed);
                }
            }
        }
        // Stage 2 for burst k-1: candidates, touch entries.
        if k >= 1 && k - 1 < nb {
            let s = &mut st[(k - 1) % 3];
            for j in 0..B {
                s.cand[j] = home_candidate(t, s.hs[j]);
                if s.cand[j].0 != u32::MAX {
                    let e = t.entry(s.cand[j].0);
                    if mode.pfe {
                        prefetch(e);
                    } else {
                        s.g1[j] = e.0[0].load(Ordering::Acquire);
                    }
                }
            }
        }
        // Stage 3 for burst k-2: verify.
        if k >= 2 {
            let s = &st[(k - 2) % 3];
            for (j, key) in kb(k - 2).iter().enumerate() {
                let (idx, more) = s.cand[j];
                let ok = idx != u32::MAX && {
                    let g = if mode.pfe {
                        t.entry(idx).0[0].load(Ordering::Acquire)
                    } else {
                        s.g1[j]
                    };
                    verify(t, idx, g, key)
                };
                if ok || (more && find(t, s.hs[j], key) != u32::MAX) {
                    hits += 1;
                }
            }
        }
    }
    black_box(sink);
    hits
}

/// Which touch stages prefetch (else load), and whether candidates are picked without
/// branches.
#[derive(Clone, Copy)]
struct Mode {
    pfb: bool,
    pfe: bool,
    bl: bool,
}
const LOADS: Mode = Mode {
    pfb: false,
    pfe: false,
    bl: false,
};
const PF: Mode = Mode {
    pfb: true,
    pfe: true,
    bl: false,
};

fn run<L: Layout>(t: &L, keys: &[Key], lookups: usize, b: usize, pf: Mode) -> usize {
    let mut hits = 0;
    let mut i = 0;
    for _ in 0..lookups / b {
        hits += burst(t, &keys[i..i + b], pf);
        i = (i + b) % N;
    }
    hits
}

/// The bucket stage alone: hash, touch, pick candidates.
fn run_buckets_only<L: Layout>(t: &L, keys: &[Key], lookups: usize) -> usize {
    const B: usize = 64;
    let mut found = 0;
    let mut i = 0;
    for _ in 0..lookups / B {
        let mut hs = [0u64; B];
        let mut sink = 0;
        for j in 0..B {
            hs[j] = hash4(keys[i + j].cv, keys[i + j].pw | WANT);
            sink ^= t.bucket(home(t, hs[j])).0[7].load(Ordering::Relaxed);
        }
        for &h in &hs {
            found += (home_candidate(t, h).0 != u32::MAX) as usize;
        }
        black_box(sink);
        i = (i + B) % N;
    }
    found
}

/// The entry stage alone: the control word, then the key, of known random entries.
fn run_entries_only<L: Layout>(t: &L, idxs: &[u32], keys: &[Key], lookups: usize) -> usize {
    const B: usize = 64;
    let mut hits = 0;
    let mut i = 0;
    for _ in 0..lookups / B {
        let mut g1 = [0u64; B];
        for j in 0..B {
            g1[j] = t.entry(idxs[i + j]).0[0].load(Ordering::Acquire);
        }
        for j in 0..B {
            hits += verify(t, idxs[i + j], g1[j], &keys[i + j]) as usize;
        }
        i = (i + B) % N;
    }
    hits
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn build<L: Layout>(mut t: L) -> (L, Vec<Key>, Vec<u32>) {
    let mut ids: Vec<u64> = (0..N as u64).map(|i| i * 7 + 3).collect();
    for &id in &ids {
        insert(&mut t, key(id));
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in (1..ids.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    let keys: Vec<Key> = ids.iter().map(|&id| key(id)).collect();
    let idxs = keys
        .iter()
        .map(|k| find(&t, hash4(k.cv, k.pw | WANT), k))
        .collect();
    (t, keys, idxs)
}

fn anon_huge_kb() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("AnonHugePages:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

type Case<'a> = (&'static str, Box<dyn Fn(usize) -> usize + 'a>);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let passes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let filter = args.get(3).cloned().unwrap_or_default();
    let lookups = passes * N;

    let (sep, keys, sep_idx) = build(Sep::new(false));
    let (colo8, _, colo8_idx) = build(Colo::<8>::new(false));
    let (colo7, _, _) = build(Colo::<7>::new(false));
    let before = anon_huge_kb();
    let (sep_h, _, _) = build(Sep::new(true));
    let (colo8_h, _, _) = build(Colo::<8>::new(true));
    let huge_kb = anon_huge_kb() - before;
    // Bytes per entry as the table counts them: this layout plus the out-index's buckets.
    let out_ix = sep.nb * 64;
    eprintln!(
        "bytes/entry (with an out index of {} MB): sep {:.1}, colo8 {:.1} ({} entries not in their bucket's page, {:.2} %), colo7 {:.1} ({} overflowed); huge variants got {} MB of huge pages",
        out_ix >> 20,
        (sep.bytes() + out_ix) as f64 / CAP as f64,
        (colo8.bytes() + out_ix) as f64 / CAP as f64,
        colo8.overflowed,
        100.0 * colo8.overflowed as f64 / N as f64,
        (colo7.bytes() + out_ix) as f64 / CAP as f64,
        colo7.overflowed,
        huge_kb >> 10,
    );

    let k = &keys[..];
    let cases: Vec<Case> = vec![
        ("sep b64", Box::new(|n| run(&sep, k, n, 64, LOADS))),
        ("colo8 b64", Box::new(|n| run(&colo8, k, n, 64, LOADS))),
        ("colo7 b64", Box::new(|n| run(&colo7, k, n, 64, LOADS))),
        ("sep b64 pf", Box::new(|n| run(&sep, k, n, 64, PF))),
        ("colo8 b64 pf", Box::new(|n| run(&colo8, k, n, 64, PF))),
        (
            "sep b64 pfb",
            Box::new(|n| run(&sep, k, n, 64, Mode { pfb: true, ..LOADS })),
        ),
        (
            "sep b64 pfe",
            Box::new(|n| run(&sep, k, n, 64, Mode { pfe: true, ..LOADS })),
        ),
        (
            "sep b64 bl",
            Box::new(|n| run(&sep, k, n, 64, Mode { bl: true, ..LOADS })),
        ),
        (
            "sep b64 pf bl",
            Box::new(|n| run(&sep, k, n, 64, Mode { bl: true, ..PF })),
        ),
        ("sep b32", Box::new(|n| run(&sep, k, n, 32, LOADS))),
        ("sep b128", Box::new(|n| run(&sep, k, n, 128, LOADS))),
        ("colo8 b128", Box::new(|n| run(&colo8, k, n, 128, LOADS))),
        ("sep pipe32", Box::new(|n| run_pipe::<_, 32>(&sep, k, n, LOADS))),
        ("sep pipe64", Box::new(|n| run_pipe::<_, 64>(&sep, k, n, LOADS))),
        (
            "colo8 pipe32",
            Box::new(|n| run_pipe::<_, 32>(&colo8, k, n, LOADS)),
        ),
        ("sep b16 pf", Box::new(|n| run(&sep, k, n, 16, PF))),
        ("sep b32 pf", Box::new(|n| run(&sep, k, n, 32, PF))),
        ("sep b128 pf", Box::new(|n| run(&sep, k, n, 128, PF))),
        ("colo8 b32 pf", Box::new(|n| run(&colo8, k, n, 32, PF))),
        ("colo7 b64 pf", Box::new(|n| run(&colo7, k, n, 64, PF))),
        (
            "colo8 b64 pf bl",
            Box::new(|n| run(&colo8, k, n, 64, Mode { bl: true, ..PF })),
        ),
        ("sep pipe32 pf", Box::new(|n| run_pipe::<_, 32>(&sep, k, n, PF))),
        ("sep pipe64 pf", Box::new(|n| run_pipe::<_, 64>(&sep, k, n, PF))),
        (
            "colo8 pipe32 pf",
            Box::new(|n| run_pipe::<_, 32>(&colo8, k, n, PF)),
        ),
        ("sep huge b64 pf", Box::new(|n| run(&sep_h, k, n, 64, PF))),
        ("colo8 huge b64 pf", Box::new(|n| run(&colo8_h, k, n, 64, PF))),
        ("sep huge b64", Box::new(|n| run(&sep_h, k, n, 64, LOADS))),
        ("colo8 huge b64", Box::new(|n| run(&colo8_h, k, n, 64, LOADS))),
        ("sep bkt-only", Box::new(|n| run_buckets_only(&sep, k, n))),
        ("colo8 bkt-only", Box::new(|n| run_buckets_only(&colo8, k, n))),
        (
            "sep ent-only",
            Box::new(|n| run_entries_only(&sep, &sep_idx, k, n)),
        ),
        (
            "colo8 ent-only",
            Box::new(|n| run_entries_only(&colo8, &colo8_idx, k, n)),
        ),
    ];
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| filter.is_empty() || c.0.contains(&*filter))
        .collect();
    // Warm up every variant once (page faults, TLB, branch predictors).
    for c in &cases {
        black_box((c.1)(N));
    }
    let mut res = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, c) in cases.iter().enumerate() {
            let t0 = Instant::now();
            let hits = (c.1)(lookups);
            let ns = t0.elapsed().as_nanos() as f64 / lookups as f64;
            assert!(
                c.0.contains("bkt-only") || hits >= lookups - lookups / 1000,
                "{}: {hits} hits of {lookups}",
                c.0
            );
            res[i].push(ns);
        }
    }
    println!("{:<18} ns per lookup, {rounds} alternated rounds", "variant");
    for (c, r) in cases.iter().zip(&res) {
        let mut s = r.clone();
        s.sort_by(f64::total_cmp);
        let line: Vec<String> = r.iter().map(|x| format!("{x:5.1}")).collect();
        println!(
            "{:<18} {}   median {:5.1}  min {:5.1}",
            c.0,
            line.join(" "),
            s[s.len() / 2],
            s[0]
        );
    }
}
