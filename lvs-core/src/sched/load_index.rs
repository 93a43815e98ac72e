//! load_index — a lock-free segment tree over a service's destination slots that keeps the
//! answer of a kernel scheduler's list scan up to date, so a pick reads the root in O(1)
//! (lc, wlc, sed, nq, fo, ovf), or descends it in O(log n) (wrr, twos), instead of scanning.
//!
//! # Small lists: no index
//! Keeping the index costs every load change a notification and the next pick its
//! application, whatever the list's size; a scan costs each pick a few instructions per
//! destination. Up to [`scan_max`] destinations the scan is cheaper, so the schedulers built
//! for such a list keep no index and register no listener: they run the kernel's loop over
//! the live counters ([`scan`], [`LeastLoad`] without an index, wrr's and twos's list
//! walks), and a bind, release or state change of their destinations notifies nobody.
//!
//! # Layout
//! `cap` = the next power of two ≥ n. Node 1 is the root, node `i` has children `2i` and
//! `2i + 1`, leaves are nodes `cap + slot`. Every node holds a *key* and a *value*. A leaf's
//! key is its destination's load and candidate weight packed into a `u64` (see [`pack`]),
//! cached from the live [`DestState`](crate::dest::DestState) whenever the destination
//! notifies its [`LoadListener`]; its value follows from the key. An internal node's pair is
//! the policy's combination of its children's pairs (for tournaments: the winner's key and
//! slot), so updates and picks stay in the index's own memory and never read the
//! destinations or follow a slot to its key.
//!
//! # Cost
//! A notification only marks its slot dirty (one atomic OR in a bitmap, plus, above 64
//! destinations, one in a summary word when the bitmap word was clean). The next read of
//! the tree (a pick) first *settles* it: re-reads the live load of every dirty slot into
//! its key and, when the key changed, recomputes the nodes above it, carrying the new
//! value up from the leaf and stopping at the first node that does not change. A pick then reads the root
//! (tournaments) or walks one or two root-to-leaf paths (wrr, twos): O(1) or O(log n),
//! plus O(log n) per destination whose load changed since the previous pick.
//!
//! # Concurrency
//! Every destination notifies from whichever thread bound, released or reclassified a
//! connection, so marks come from many threads at once, with plain atomics and no lock.
//! Settling is done by one thread at a time: a reader that finds dirty slots takes the
//! settle flag with a compare-and-swap and, if another thread holds it, does not wait but
//! reads the tree as it stands (the holder is applying the marks). So the tree has a single
//! writer, and its nodes are plain atomic words written with stores.
//!
//! A mark is an acquire-release read-modify-write of the bitmap word after the counter
//! update it reports, and the settler swaps the word (acquire-release) before it reads the
//! counters, so a settle that takes a mark sees the counters as they were when it was made;
//! a mark that lands after the swap stays for the next settle. Read by a single thread, the
//! root is therefore always what the kernel's scan of the live counters gives.
//!
//! What remains racy, and is accepted (the kernel's own counters are read racily during its
//! scans too):
//! - a least-load pick that finds marks pending while another thread settles does not read
//!   the tree (which may lag them for as long as that thread is descheduled) but scans the
//!   live counters as the kernel does: exact, O(n), and only when two threads meet there;
//! - a mark that lands just after a pick settled is seen by the next pick (as the kernel's
//!   scan would have missed it had it run a moment earlier);
//! - a briefly stale root may name a destination that has just become ineligible: callers
//!   check the named slot live, repair it with [`LoadIndex::refresh`] and, after a few
//!   failed tries, fall back to a plain scan. They never return it;
//! - a root that briefly says "nobody" while a destination has just become eligible gives
//!   `None` for that pick, as the kernel would had it read the counters a moment earlier;
//! - building a new snapshot's index re-registers the listeners, so the previous snapshot's
//!   scheduler (still serving until the swap) stops following loads a moment early.
//!
//! Invariants kept at all times: a node value is either a slot `< n` or the policy's
//! `EMPTY`; keys and nodes are only ever indexed in range; when no slot is dirty and nobody
//! settles, every node equals what its children and the keys give.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::SchedulerKind;
use crate::dest::{Destination, ListenerSlot, LoadListener, MAX_WEIGHT, RAMP_FULL};

/// No destination: the value of an empty tournament node.
pub(super) const NONE: u32 = u32::MAX;

const LOAD_MAX: u64 = (1 << 48) - 1;

/// Packs a load figure and a candidate weight (0 = not a candidate) into one key.
#[inline]
pub(super) fn pack(load: u64, weight: u32) -> u64 {
    (load.min(LOAD_MAX) << 16) | weight.min(MAX_WEIGHT) as u64
}

/// The candidate weight of a key: 0 when the destination may not be picked.
#[inline]
pub(super) fn key_weight(key: u64) -> u64 {
    key & 0xFFFF
}

/// The load figure of a key.
#[inline]
pub(super) fn key_load(key: u64) -> u64 {
    key >> 16
}

/// The weight a scheduler compares for `d`: its effective (ramped) weight when it may be
/// picked (configured weight > 0 and not OVERLOADED), else 0.
#[inline]
pub(super) fn candidate_weight(d: &Destination) -> u32 {
    // A configured weight of 0 gives an effective weight of 0 already. OVERLOAD and a
    // slow-start ramp are the rare cases (cold, so a scan's loop stays a straight line).
    if d.state.is_overloaded() {
        std::hint::cold_path();
        return 0;
    }
    if d.state.ramp() < RAMP_FULL {
        std::hint::cold_path();
        return d.weight().min(MAX_WEIGHT);
    }
    d.config.weight.min(MAX_WEIGHT)
}

/// What a tree computes: the key of a destination, the value of its leaf, and how two
/// children's (key, value) pairs combine (the left child covers the lower slots, i.e.
/// earlier in list order).
pub(super) trait Policy: Send + Sync + 'static {
    /// Value of a padding leaf beyond the last slot (its key is 0).
    const EMPTY: u32;
    /// The cached key of a destination.
    fn key(d: &Destination) -> u64;
    /// The leaf value of `slot` whose key is `key`.
    fn leaf(slot: u32, key: u64) -> u32;
    /// The (key, value) of a node from its children's.
    fn combine(left: (u64, u32), right: (u64, u32)) -> (u64, u32);

    /// [`combine`](Self::combine) of `carried` and its sibling `sib`, `carried` being the
    /// left child when `carried_left` (the step of a walk up from a changed leaf).
    #[inline]
    fn combine_carry(carried: (u64, u32), sib: (u64, u32), carried_left: bool) -> (u64, u32) {
        if carried_left {
            Self::combine(carried, sib)
        } else {
            Self::combine(sib, carried)
        }
    }
}

/// A destination as a least-load rule sees it: its load figure and its candidate weight
/// (0 when it may not be picked).
pub(super) type Rating = (u64, u64);

/// A kernel least-load rule: how to rate a destination and which of two wins.
pub(super) trait LoadRule: Send + Sync + 'static {
    /// The destination's load figure and candidate weight (weight 0: not a candidate).
    fn rate(d: &Destination) -> Rating;
    /// True when `right` (later in list order) strictly beats `left`, both candidates, i.e.
    /// when the kernel's scan, holding `left`, would switch to `right`.
    fn right_wins(left: Rating, right: Rating) -> bool;

    /// A rating that every candidate beats and no non-candidate beats, if the rule has
    /// one: the scan then starts from it and tests nothing else (for wlc, `(1, 0)`: any
    /// positive weight gives `1 × w > doh × 0`, a weight of 0 gives `0 > 0`).
    const NOBODY: Option<Rating> = None;

    /// The destination's key in a tree: its rating packed.
    #[inline]
    fn key(d: &Destination) -> u64 {
        let (load, weight) = Self::rate(d);
        pack(load, weight as u32)
    }
}

/// The rating packed in `key`.
#[inline]
fn unpack(key: u64) -> Rating {
    (key_load(key), key_weight(key))
}

/// Tournament over a [`LoadRule`]: every node holds the slot the kernel's scan would pick
/// among its leaves (ties to the earliest), or [`NONE`].
pub(super) struct Tournament<R>(PhantomData<fn() -> R>);

impl<R: LoadRule> Policy for Tournament<R> {
    const EMPTY: u32 = NONE;

    #[inline]
    fn key(d: &Destination) -> u64 {
        R::key(d)
    }

    #[inline]
    fn leaf(slot: u32, key: u64) -> u32 {
        if key_weight(key) != 0 { slot } else { NONE }
    }

    #[inline]
    fn combine(left: (u64, u32), right: (u64, u32)) -> (u64, u32) {
        if Self::right_beats(left.0, right.0) {
            right
        } else {
            left
        }
    }

    #[inline]
    fn combine_carry(carried: (u64, u32), sib: (u64, u32), carried_left: bool) -> (u64, u32) {
        // The same choice with the keys put in order first, so that the step selects
        // without branching on the side.
        let (l, r) = if carried_left {
            (carried.0, sib.0)
        } else {
            (sib.0, carried.0)
        };
        if Self::right_beats(l, r) == carried_left {
            sib
        } else {
            carried
        }
    }
}

impl<R: LoadRule> Tournament<R> {
    /// True when the node keyed `right` wins over `left` (a node whose key has weight 0
    /// names nobody, NONE: not a candidate).
    #[inline]
    fn right_beats(left: u64, right: u64) -> bool {
        key_weight(left) == 0 || (key_weight(right) != 0 && R::right_wins(unpack(left), unpack(right)))
    }
}

/// The longest destination list scheduler `kind` scans instead of keeping a load index (0
/// for the schedulers that keep none). Up to this size the kernel's own list walk over the
/// live counters costs less than keeping an index up to date (which every bind, release
/// and state change pays, through a notification, and the next pick pays again, applying
/// it); above it the index's O(1) / O(log n) picks win. The choice is made when the
/// scheduler is built for a destination list (`sched::build`); an edit of the service
/// rebuilds it, so a list that grows past the size switches to an index and back.
///
/// The sizes are measured cross-overs of a pick plus one connection's accounting (bind,
/// ESTABLISHED, release; `sched_burst` in `benches/sched.rs`, and its instruction count in
/// `benches/examples/sched_callgrind.rs`). In time, keeping the index costs about 65-80 ns
/// per connection at any size, most of it in the atomic read-modify-writes of the
/// notifications and the settling, while a scan costs 1-1.5 ns per destination (wlc: 36 ns
/// over 16, 58 over 32, 92 over 64; sed 33 over 16, 63 over 32; fo 34 over 16, 38 over
/// 32; twos 64 over 16 against 81 indexed). The sizes are those time cross-overs, rounded
/// down. Counted in instructions, where a locked instruction is one like any other, the
/// index is cheaper sooner (390-630 per connection against 18-25 per destination: wlc
/// breaks even at about 20, sed at 10, fo at 16). wrr walks only from its cursor to the
/// next destination heavy enough, a few on average whatever the size.
pub(super) fn scan_max(kind: SchedulerKind) -> usize {
    match kind {
        SchedulerKind::Wlc | SchedulerKind::Lc => 32,
        SchedulerKind::Fo | SchedulerKind::Ovf => 32,
        SchedulerKind::Sed | SchedulerKind::Nq | SchedulerKind::Twos => 16,
        SchedulerKind::Wrr => 64,
        _ => 0,
    }
}

/// True when scheduler `kind` built for `n` destinations keeps a load index (and registers
/// it as their listener); false when it scans the live counters (no listener at all).
#[inline]
pub(super) fn indexed(kind: SchedulerKind, n: usize) -> bool {
    n > scan_max(kind)
}

/// The kernel-style list scan for a [`LoadRule`]: the pick of a small list (no index), the
/// reference the tournament reproduces, and the fallback when the index cannot answer.
/// The first eligible destination that no later one beats: ties to the earliest.
#[inline]
pub(super) fn scan<R: LoadRule>(dests: &[Destination]) -> Option<usize> {
    if let Some(nobody) = R::NOBODY {
        // The winner is kept as a reference, turned into its index at the end: the loop
        // counts nothing but its place in the slice.
        let (mut best, mut at) = (nobody, None);
        for d in dests {
            let r = R::rate(d);
            if R::right_wins(best, r) {
                // Rare after the first few: keeps the loop a straight line for the others.
                std::hint::cold_path();
                best = r;
                at = Some(d);
            }
        }
        return at.map(|d| {
            (d as *const Destination as usize - dests.as_ptr() as usize) / std::mem::size_of::<Destination>()
        });
    }
    // As the kernel's loops: find the first candidate, then compare the rest with it.
    let mut rest = dests.iter().enumerate();
    let (mut at, mut best) = loop {
        let (i, d) = rest.next()?;
        let r = R::rate(d);
        if r.1 != 0 {
            break (i, r);
        }
    };
    for (i, d) in rest {
        let r = R::rate(d);
        if r.1 != 0 && R::right_wins(best, r) {
            (at, best) = (i, r);
        }
    }
    Some(at)
}

/// One node of the tree: its key and value (see the module docs).
#[derive(Debug)]
struct Node {
    key: AtomicU64,
    value: AtomicU32,
}

impl Node {
    fn new((key, value): (u64, u32)) -> Node {
        Node {
            key: AtomicU64::new(key),
            value: AtomicU32::new(value),
        }
    }

    /// The (key, value) pair, as the settling thread reads it.
    #[inline]
    fn pair(&self) -> (u64, u32) {
        (
            self.key.load(Ordering::Relaxed),
            self.value.load(Ordering::Relaxed),
        )
    }
}

/// The dirty marks of a [`LoadIndex`]: what its destinations notify. A separate object
/// that owns no destination, so a registered listener (which a destination, or a thread's
/// cache of listeners, may hold for a while) keeps only these words alive, never the
/// index's destinations.
struct Marks {
    /// Bit `slot % 64` of word `slot / 64`: `slot` notified since the last settle.
    dirty: Box<[AtomicU64]>,
    /// Bit `w % 64`: some word `w` of `dirty` with that remainder may have bits set.
    summary: AtomicU64,
}

impl Marks {
    /// Notes that destination `slot`'s load changed; out-of-range slots are ignored.
    #[inline]
    fn mark(&self, slot: usize) {
        let w = slot / 64;
        let Some(word) = self.dirty.get(w) else {
            return;
        };
        // Up to 64 destinations: the word is its own summary (see `pending`).
        if word.fetch_or(1 << (slot % 64), Ordering::AcqRel) == 0 && self.dirty.len() > 1 {
            self.summary.fetch_or(1 << (w % 64), Ordering::AcqRel);
        }
    }

    /// True when a mark may be waiting.
    #[inline]
    fn pending(&self) -> bool {
        match &*self.dirty {
            [word] => word.load(Ordering::Acquire) != 0,
            _ => self.summary.load(Ordering::Acquire) != 0,
        }
    }
}

impl LoadListener for Marks {
    #[inline]
    fn load_changed(&self, slot: usize) {
        self.mark(slot);
    }
}

/// The index itself: the nodes, the dirty marks and the destinations it was built for.
pub(super) struct LoadIndex<P> {
    dests: Box<[Destination]>,
    /// Nodes 1..2·cap: internal nodes below `cap`, leaves from `cap` (0 unused).
    nodes: Box<[Node]>,
    /// The marks, registered as every destination's listener.
    marks: Arc<Marks>,
    /// Held by the one thread settling the tree.
    settling: AtomicBool,
    cap: usize,
    _policy: PhantomData<fn() -> P>,
}

impl<P> fmt::Debug for LoadIndex<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadIndex")
            .field("slots", &self.dests.len())
            .field("cap", &self.cap)
            .finish()
    }
}

impl<P: Policy> LoadIndex<P> {
    /// Builds the index for `dests` and registers it as their load listener (replacing the
    /// previous snapshot's). Runs on the control plane: O(n log n).
    pub(super) fn new(dests: &[Destination]) -> Arc<LoadIndex<P>> {
        let n = dests.len();
        let cap = n.max(1).next_power_of_two();
        let mut nodes: Vec<Node> = (0..2 * cap).map(|_| Node::new((0, P::EMPTY))).collect();
        for (slot, d) in dests.iter().enumerate() {
            let key = P::key(d);
            nodes[cap + slot] = Node::new((key, P::leaf(slot as u32, key)));
        }
        // Built bottom-up before anyone can see it.
        for i in (1..cap).rev() {
            nodes[i] = Node::new(P::combine(nodes[2 * i].pair(), nodes[2 * i + 1].pair()));
        }
        let marks = Arc::new(Marks {
            dirty: (0..n.div_ceil(64).max(1)).map(|_| AtomicU64::new(0)).collect(),
            summary: AtomicU64::new(0),
        });
        for (slot, d) in dests.iter().enumerate() {
            d.state.set_listener(Some(ListenerSlot {
                listener: marks.clone(),
                slot,
            }));
        }
        let index = Arc::new(LoadIndex {
            dests: dests.into(),
            nodes: nodes.into(),
            marks,
            settling: AtomicBool::new(false),
            cap,
            _policy: PhantomData,
        });
        // Counters that moved between computing the keys and registering were not notified
        // to us: look at every slot once now that we listen.
        for slot in 0..n {
            index.mark(slot);
        }
        index.settle();
        index
    }

    /// Number of destination slots.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.dests.len()
    }

    /// The value of node `i`.
    #[inline]
    fn value(&self, i: usize) -> u32 {
        self.nodes[i].value.load(Ordering::Acquire)
    }

    /// The root's value after settling: the winning slot (tournaments), or the aggregate
    /// (sum, max).
    #[inline]
    pub(super) fn root(&self) -> u32 {
        self.settle();
        self.value(1)
    }

    /// True when every node equals what its inputs give (only meaningful when quiescent).
    #[cfg(test)]
    pub(super) fn is_consistent(&self) -> bool {
        self.settle();
        (1..self.cap).all(|i| {
            self.nodes[i].pair() == P::combine(self.nodes[2 * i].pair(), self.nodes[2 * i + 1].pair())
        })
    }

    /// The cached key of `slot` (after settling).
    #[cfg(test)]
    pub(super) fn key(&self, slot: usize) -> u64 {
        self.settle();
        self.nodes[self.cap + slot].key.load(Ordering::Acquire)
    }

    /// Notes that destination `slot`'s load changed; the next read of the tree applies it.
    /// Out-of-range slots are ignored.
    #[inline]
    pub(super) fn mark(&self, slot: usize) {
        self.marks.mark(slot);
    }

    /// Re-reads destination `slot`'s live load now (a repair by a reader that found the
    /// tree naming an ineligible destination): [`mark`](Self::mark) and settle.
    pub(super) fn refresh(&self, slot: usize) {
        self.mark(slot);
        self.settle();
    }

    /// The root's value if the tree is current: settled by this call or with nothing
    /// pending. `None` when marks are pending and another thread is applying them (the
    /// tree may lag the live loads until it is done): the caller then scans.
    #[inline]
    pub(super) fn current_root(&self) -> Option<u32> {
        self.settle().then(|| self.value(1))
    }

    /// Applies every pending mark, unless another thread is doing so; false in that case
    /// (the tree may not show every pending change yet).
    #[inline]
    fn settle(&self) -> bool {
        !self.marks.pending() || self.settle_marks()
    }

    /// The work of [`settle`](Self::settle) once a mark is pending; false if another
    /// thread holds the settle flag.
    #[inline(never)]
    fn settle_marks(&self) -> bool {
        if self
            .settling
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // Marks keep coming from other threads while we work: a few rounds, then leave the
        // rest to the next reader.
        for _ in 0..4 {
            if let [word] = &*self.marks.dirty {
                // Up to 64 destinations: one word, no summary.
                let bits = word.swap(0, Ordering::AcqRel);
                if bits == 0 {
                    break;
                }
                self.apply_word(0, bits);
                continue;
            }
            let mut sum = self.marks.summary.swap(0, Ordering::AcqRel);
            if sum == 0 {
                break;
            }
            while sum != 0 {
                // Words r, r + 64, r + 128 ... share summary bit r.
                let mut w = sum.trailing_zeros() as usize;
                sum &= sum - 1;
                while let Some(word) = self.marks.dirty.get(w) {
                    self.apply_word(w, word.swap(0, Ordering::AcqRel));
                    w += 64;
                }
            }
        }
        self.settling.store(false, Ordering::Release);
        true
    }

    /// Applies the marks of slots `64 w + b` for the bits `b` set in `bits`. One slot walks
    /// up alone ([`apply`](Self::apply)); several are applied level by level, so the nodes
    /// their paths share are recomputed once per level (a burst's releases, say, fix
    /// 16 leaves and the 15 nodes above them instead of 16 whole paths).
    #[inline]
    fn apply_word(&self, w: usize, bits: u64) {
        if bits & bits.wrapping_sub(1) == 0 {
            if bits != 0 {
                self.apply(w * 64 + bits.trailing_zeros() as usize);
            }
            return;
        }
        // Leaves first: `m` keeps the bits whose key changed.
        let mut m = 0u64;
        let mut rest = bits;
        while rest != 0 {
            let b = rest.trailing_zeros();
            rest &= rest - 1;
            if self.set_leaf(w * 64 + b as usize) {
                m |= 1 << b;
            }
        }
        // Bit b of `m` stands for node `base + b`. `base` is the leaf index of slot 64 w: a
        // multiple of 64 (or, when cap < 64, cap itself, a power of two), so it stays even
        // while several bits remain and node base + b has parent base / 2 + b / 2.
        let mut base = self.cap + w * 64;
        while m != 0 && base > 1 {
            let mut up = 0u64;
            while m != 0 {
                up |= 1 << (m.trailing_zeros() / 2);
                m &= m - 1;
            }
            base /= 2;
            m = up;
            let mut rest = up;
            while rest != 0 {
                let j = rest.trailing_zeros();
                rest &= rest - 1;
                if !self.recompute(base + j as usize) {
                    // Unchanged: nothing above needs it.
                    m &= !(1 << j);
                }
            }
        }
    }

    /// Re-reads destination `slot`'s live load into its leaf; true if the key changed.
    #[inline]
    fn set_leaf(&self, slot: usize) -> bool {
        let (Some(d), Some(leaf)) = (self.dests.get(slot), self.nodes.get(self.cap + slot)) else {
            return false;
        };
        let key = P::key(d);
        if leaf.key.load(Ordering::Relaxed) == key {
            return false;
        }
        leaf.key.store(key, Ordering::Relaxed);
        leaf.value.store(P::leaf(slot as u32, key), Ordering::Release);
        true
    }

    /// Recomputes internal node `i` from its children; true if it changed.
    #[inline]
    fn recompute(&self, i: usize) -> bool {
        let (Some(l), Some(r), Some(node)) = (
            self.nodes.get(2 * i),
            self.nodes.get(2 * i + 1),
            self.nodes.get(i),
        ) else {
            return false;
        };
        let v = P::combine(l.pair(), r.pair());
        if node.pair() == v {
            return false;
        }
        node.key.store(v.0, Ordering::Relaxed);
        node.value.store(v.1, Ordering::Release);
        true
    }

    /// Re-reads destination `slot`'s live load into its key and, if it changed, fixes the
    /// nodes above it. Only the settling thread calls it. O(log n).
    #[inline]
    fn apply(&self, slot: usize) {
        let i = self.cap + slot;
        let (Some(d), Some(leaf)) = (self.dests.get(slot), self.nodes.get(i)) else {
            return;
        };
        let key = P::key(d);
        if leaf.key.load(Ordering::Relaxed) == key {
            // Same key as before (e.g. an inactive connection for sed, any bind for fo):
            // nothing in the tree depends on this notification.
            return;
        }
        let mut v = (key, P::leaf(slot as u32, key));
        leaf.key.store(v.0, Ordering::Relaxed);
        leaf.value.store(v.1, Ordering::Release);
        // Carry the new pair up from the leaf, combining it with each sibling's.
        let nodes = &*self.nodes;
        let mut i = i;
        while i > 1 {
            let (Some(sib), Some(node)) = (nodes.get(i ^ 1), nodes.get(i >> 1)) else {
                break;
            };
            v = P::combine_carry(v, sib.pair(), i & 1 == 0);
            if node.pair() == v {
                // Unchanged: nothing above can change.
                break;
            }
            node.key.store(v.0, Ordering::Relaxed);
            node.value.store(v.1, Ordering::Release);
            i >>= 1;
        }
    }

    /// First slot `>= pos` whose leaf value is at least `c` (max trees; `c >= 1`):
    /// climbs from `pos`'s leaf to the first subtree on its right holding a value `>= c`,
    /// then descends into it. O(log n), and O(1) when the answer is near `pos`. Under
    /// concurrent updates it may return a slot whose leaf is below `c`; callers validate.
    pub(super) fn first_at_least(&self, pos: usize, c: u32) -> Option<usize> {
        self.settle();
        if pos >= self.dests.len() {
            return None;
        }
        let mut i = self.cap + pos;
        while self.value(i) < c {
            // Up while a right child, then over to the right sibling.
            while i & 1 == 1 {
                i >>= 1;
            }
            if i == 0 {
                return None;
            }
            i += 1;
        }
        while i < self.cap {
            i = if self.value(2 * i) >= c { 2 * i } else { 2 * i + 1 };
        }
        let slot = i - self.cap;
        (slot < self.dests.len()).then_some(slot)
    }

    /// [`descend_sum`](Self::descend_sum) for two positions at once (the two walks are
    /// independent, so their loads overlap).
    pub(super) fn descend_sum2(&self, mut r1: u64, mut r2: u64) -> (usize, usize) {
        self.settle();
        let (mut i1, mut i2) = (1, 1);
        while i1 < self.cap {
            let l1 = self.value(2 * i1) as u64;
            let l2 = self.value(2 * i2) as u64;
            if r1 <= l1 {
                i1 *= 2;
            } else {
                r1 -= l1;
                i1 = 2 * i1 + 1;
            }
            if r2 <= l2 {
                i2 *= 2;
            } else {
                r2 -= l2;
                i2 = 2 * i2 + 1;
            }
        }
        (i1 - self.cap, i2 - self.cap)
    }

    /// The slot whose leaf covers position `r` (1-based) of the running sum of leaf values
    /// (sum trees): the first slot whose inclusive prefix sum is `>= r`. O(log n). May land
    /// on a zero leaf or a padding slot under concurrent updates; callers validate.
    #[cfg(test)]
    pub(super) fn descend_sum(&self, mut r: u64) -> usize {
        self.settle();
        let mut i = 1;
        while i < self.cap {
            let l = self.value(2 * i) as u64;
            if r <= l {
                i *= 2;
            } else {
                r -= l;
                i = 2 * i + 1;
            }
        }
        i - self.cap
    }
}

/// A least-load scheduler: for a small list (up to [`scan_max`]) the kernel's scan of the
/// live counters, with no index and no listener; for a larger one a [`Tournament`] over the
/// rule `R`, the kernel's winner with its list-order tie-break read from the root in O(1).
pub(super) struct LeastLoad<R: LoadRule> {
    /// `None`: scan.
    index: Option<Arc<LoadIndex<Tournament<R>>>>,
}

impl<R: LoadRule> fmt::Debug for LeastLoad<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeastLoad").field("index", &self.index).finish()
    }
}

impl<R: LoadRule> LeastLoad<R> {
    /// Scheduler `kind` for `dests`: a scan up to [`scan_max`] destinations, else an index
    /// registered as their load listener.
    pub(super) fn new(kind: SchedulerKind, dests: &[Destination]) -> LeastLoad<R> {
        if indexed(kind, dests.len()) {
            LeastLoad::with_index(dests)
        } else {
            LeastLoad { index: None }
        }
    }

    /// The scan, whatever the number of destinations (for tests comparing both ways).
    #[cfg(test)]
    pub(super) fn without_index() -> LeastLoad<R> {
        LeastLoad { index: None }
    }

    /// Builds the tournament for `dests`, whatever their number, and registers it as their
    /// load listener.
    pub(super) fn with_index(dests: &[Destination]) -> LeastLoad<R> {
        LeastLoad {
            index: Some(LoadIndex::new(dests)),
        }
    }

    /// The kernel's pick: a scan for a small list; else the root if it is still a
    /// candidate, else repaired, else a scan.
    #[inline]
    pub(super) fn pick(&self, dests: &[Destination]) -> Option<usize> {
        match &self.index {
            None => scan::<R>(dests),
            Some(index) => Self::pick_indexed(index, dests),
        }
    }

    #[inline]
    fn pick_indexed(index: &LoadIndex<Tournament<R>>, dests: &[Destination]) -> Option<usize> {
        if dests.len() != index.len() {
            return scan::<R>(dests);
        }
        for _ in 0..3 {
            // While another thread applies pending load changes the tree may lag them: the
            // kernel's scan of the live counters answers instead (exact, O(n), and only
            // while two threads pick or settle at the same moment).
            let Some(s) = index.current_root() else {
                return scan::<R>(dests);
            };
            if s == NONE {
                return None;
            }
            let s = s as usize;
            match dests.get(s) {
                Some(d) if R::rate(d).1 != 0 => return Some(s),
                Some(_) => index.refresh(s),
                None => break,
            }
        }
        scan::<R>(dests)
    }

    /// The index, for tests (of a scheduler built [`with_index`](Self::with_index)).
    #[cfg(test)]
    pub(super) fn index(&self) -> &LoadIndex<Tournament<R>> {
        self.index.as_ref().expect("built with an index")
    }
}

/// Defines a least-load scheduler: the public type `$name` over a [`LeastLoad`] index ordered
/// by `$rule`, its [`Scheduler`](super::Scheduler) impl reporting `$kind`, and the module's
/// `build` function.
macro_rules! least_load_scheduler {
    ($(#[$doc:meta])* $name:ident, $rule:ty, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name($crate::sched::load_index::LeastLoad<$rule>);

        impl $crate::sched::Scheduler for $name {
            fn kind(&self) -> $crate::sched::SchedulerKind {
                $kind
            }

            #[inline]
            fn schedule(
                &self,
                dests: &[$crate::dest::Destination],
                _flow: &$crate::sched::FlowKey,
                _now: $crate::time::Time,
            ) -> Option<usize> {
                self.0.pick(dests)
            }

            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }

        pub(super) fn build(
            dests: &[$crate::dest::Destination],
            _flags: $crate::service::SchedFlags,
            _prev: Option<&dyn $crate::sched::Scheduler>,
        ) -> Box<dyn $crate::sched::Scheduler> {
            Box::new($name($crate::sched::load_index::LeastLoad::new($kind, dests)))
        }

        /// The scheduler built both ways for `dests`, scanning and indexed, for tests.
        #[cfg(test)]
        pub(super) fn build_both(
            dests: &[$crate::dest::Destination],
        ) -> $crate::sched::load_index::tests::Both {
            use $crate::sched::load_index::LeastLoad;
            $crate::sched::load_index::tests::Both(
                Box::new($name(LeastLoad::without_index())),
                Box::new($name(LeastLoad::with_index(dests))),
            )
        }
    };
}
pub(super) use least_load_scheduler;

#[cfg(test)]
pub(super) mod tests {
    //! Shared fixtures for the scheduler tests.
    use super::*;
    use crate::dest::{ConnClass, DestConfig};
    use crate::sched::{FlowKey, Scheduler};
    use crate::service::Protocol;
    use std::net::IpAddr;

    /// Destinations with `weights`, in list order, addresses 10.0.1.(i+1):80.
    pub fn dests(weights: &[u32]) -> Vec<Destination> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Destination::new(DestConfig {
                    weight: w,
                    ..DestConfig::new([10, 0, 1, i as u8 + 1].into(), 80)
                })
            })
            .collect()
    }

    /// One scheduler built both ways over the same destinations: scanning (no index) and
    /// indexed. Its picks must agree.
    #[derive(Debug)]
    pub struct Both(pub Box<dyn Scheduler>, pub Box<dyn Scheduler>);

    impl Both {
        /// The pick of both ways, checked equal.
        pub fn pick(&self, ds: &[Destination], flow: &FlowKey) -> Option<usize> {
            let scanned = self.0.schedule(ds, flow, crate::time::Time::ZERO);
            let indexed = self.1.schedule(ds, flow, crate::time::Time::ZERO);
            assert_eq!(scanned, indexed, "scanned and indexed picks differ");
            scanned
        }
    }

    /// Sets a destination's counters by binding.
    pub fn load(d: &Destination, active: u32, inactive: u32) {
        for _ in 0..active {
            d.state.bind(ConnClass::Active);
        }
        for _ in 0..inactive {
            d.state.bind(ConnClass::Inactive);
        }
    }

    /// A TCP flow from client 192.0.2.x, port p.
    pub fn flow(x: u32) -> FlowKey {
        FlowKey {
            proto: Protocol::Tcp,
            src: IpAddr::from((0xC000_0200u32 | (x & 0xFF)).to_be_bytes()),
            src_port: 1024 + (x % 60000) as u16,
            dst: [10, 0, 0, 1].into(),
            dst_port: 80,
        }
    }

    struct Lc;
    impl LoadRule for Lc {
        fn rate(d: &Destination) -> Rating {
            (d.state.overhead(), candidate_weight(d) as u64)
        }
        fn right_wins(l: Rating, r: Rating) -> bool {
            r.0 < l.0
        }
    }

    #[test]
    fn sizes_one_to_nine_build_and_follow_updates() {
        for n in 1..=9usize {
            let ds = dests(&vec![1; n]);
            let ll = LeastLoad::<Lc>::with_index(&ds);
            assert_eq!(ll.pick(&ds), Some(0), "n={n}: all equal, first wins");
            // Load every slot but the last: the last must win.
            for d in &ds[..n - 1] {
                load(d, 1, 0);
            }
            assert_eq!(ll.pick(&ds), Some(n - 1), "n={n}");
            assert_eq!(ll.index().root() as usize, n - 1);
        }
    }

    #[test]
    fn root_is_none_when_nothing_is_eligible_and_recovers() {
        let ds = dests(&[0, 0, 0]);
        let ll = LeastLoad::<Lc>::with_index(&ds);
        assert_eq!(ll.index().root(), NONE);
        assert_eq!(ll.pick(&ds), None);
        let ds = dests(&[1, 1]);
        ds[0].state.set_thresholds(1, 0);
        ds[1].state.set_thresholds(1, 0);
        let ll = LeastLoad::<Lc>::with_index(&ds);
        load(&ds[0], 1, 0);
        load(&ds[1], 1, 0);
        assert_eq!(ll.pick(&ds), None, "both overloaded");
        ds[1].state.unbind(ConnClass::Active);
        assert_eq!(ll.pick(&ds), Some(1));
        assert_eq!(key_weight(ll.index().key(0)), 0);
    }

    #[test]
    fn stale_ineligible_root_is_repaired_not_returned() {
        let ds = dests(&[1, 1]);
        let ll = LeastLoad::<Lc>::with_index(&ds);
        load(&ds[1], 1, 0);
        assert_eq!(ll.pick(&ds), Some(0));
        // Unregister so the index misses the overload of slot 0.
        ds[0].state.set_listener(None);
        ds[0].state.set_thresholds(1, 0);
        load(&ds[0], 5, 0);
        assert!(ds[0].state.is_overloaded());
        assert_eq!(ll.index().root(), 0, "index is stale");
        assert_eq!(ll.pick(&ds), Some(1), "stale root repaired, never returned");
    }

    #[test]
    fn a_pick_while_another_thread_settles_answers_from_the_live_loads() {
        let ds = dests(&[1, 1]);
        let ll = LeastLoad::<Lc>::with_index(&ds);
        assert_eq!(ll.pick(&ds), Some(0), "a tie goes to the first in list order");
        // Another thread holds the settle flag (descheduled in the middle, say) while slot 0
        // gets a connection: the tree still names slot 0, the live loads say slot 1.
        ll.index().settling.store(true, Ordering::SeqCst);
        load(&ds[0], 1, 0);
        assert_eq!(ll.index().value(1), 0, "the tree lags");
        assert_eq!(
            ll.pick(&ds),
            Some(1),
            "the pick scans instead of reading the lagging root"
        );
        ll.index().settling.store(false, Ordering::SeqCst);
        assert_eq!(ll.pick(&ds), Some(1));
        assert_eq!(ll.index().value(1), 1, "the next free pick settles the tree");
    }

    #[test]
    fn concurrent_binds_converge_to_the_scan() {
        let ds = dests(&[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]);
        let ll = LeastLoad::<Lc>::with_index(&ds);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (ds, ll) = (&ds, &ll);
                s.spawn(move || {
                    for i in 0..2000usize {
                        let d = &ds[(i * 7 + t * 3) % ds.len()];
                        d.state.bind(ConnClass::Active);
                        if i % 3 != 0 {
                            d.state.unbind(ConnClass::Active);
                        }
                        // Picks settle the tree while other threads mark it.
                        if i % 5 == t {
                            let p = ll.pick(ds).expect("every destination is eligible");
                            assert!(p < ds.len());
                        }
                    }
                });
            }
        });
        // Quiescent now: no node may have lost a concurrent child update.
        assert!(ll.index().is_consistent());
        // Keys may lag only on same-slot races; one more notification each fixes them.
        for d in &ds {
            d.state.notify();
        }
        assert_eq!(ll.pick(&ds), scan::<Lc>(&ds));
        assert_eq!(ll.index().root() as usize, scan::<Lc>(&ds).unwrap());
    }
}

#[cfg(test)]
mod oracle_tests {
    //! The indexed picks of lc, wlc, sed, nq, fo and ovf against the kernel's loops,
    //! transcribed plainly (effective weight standing in for `dest->weight`).
    use super::tests::{dests, flow};
    use crate::dest::{ConnClass, Destination};
    use crate::sched::{self, SchedulerKind};
    use crate::service::SchedFlags;
    use crate::time::Time;
    use proptest::prelude::*;

    fn overloaded(d: &Destination) -> bool {
        d.state.is_overloaded()
    }

    fn w(d: &Destination) -> u64 {
        d.weight() as u64
    }

    fn overhead(d: &Destination) -> u64 {
        (d.state.active_conns() as u64) * 256 + d.state.inactive_conns() as u64
    }

    fn active(d: &Destination) -> u64 {
        d.state.active_conns() as u64
    }

    fn kernel(kind: SchedulerKind, ds: &[Destination]) -> Option<usize> {
        match kind {
            SchedulerKind::Lc => {
                let mut least: Option<(usize, u64)> = None;
                for (i, d) in ds.iter().enumerate() {
                    if overloaded(d) || w(d) == 0 {
                        continue;
                    }
                    let doh = overhead(d);
                    if least.is_none() || doh < least.unwrap().1 {
                        least = Some((i, doh));
                    }
                }
                least.map(|l| l.0)
            }
            SchedulerKind::Wlc | SchedulerKind::Sed => {
                let oh = |d: &Destination| {
                    if kind == SchedulerKind::Wlc {
                        overhead(d)
                    } else {
                        active(d) + 1
                    }
                };
                let first = ds.iter().position(|d| !overloaded(d) && w(d) > 0)?;
                let (mut least, mut loh) = (first, oh(&ds[first]));
                for (i, d) in ds.iter().enumerate().skip(first + 1) {
                    if overloaded(d) {
                        continue;
                    }
                    let doh = oh(d);
                    if loh * w(d) > doh * w(&ds[least]) {
                        least = i;
                        loh = doh;
                    }
                }
                Some(least)
            }
            SchedulerKind::Nq => {
                let mut least: Option<(usize, u64)> = None;
                for (i, d) in ds.iter().enumerate() {
                    if overloaded(d) || w(d) == 0 {
                        continue;
                    }
                    let doh = active(d) + 1;
                    if active(d) == 0 {
                        return Some(i);
                    }
                    match least {
                        Some((l, loh)) if loh * w(d) <= doh * w(&ds[l]) => {}
                        _ => least = Some((i, doh)),
                    }
                }
                least.map(|l| l.0)
            }
            SchedulerKind::Fo => {
                let (mut h, mut hw) = (None, 0);
                for (i, d) in ds.iter().enumerate() {
                    if !overloaded(d) && w(d) > hw {
                        h = Some(i);
                        hw = w(d);
                    }
                }
                h
            }
            SchedulerKind::Ovf => {
                let (mut h, mut hw) = (None, 0);
                for (i, d) in ds.iter().enumerate() {
                    if overloaded(d) || active(d) > w(d) || w(d) == 0 {
                        continue;
                    }
                    if h.is_none() || w(d) > hw {
                        h = Some(i);
                        hw = w(d);
                    }
                }
                h
            }
            other => unreachable!("{other} has no oracle here"),
        }
    }

    /// Loads every destination a little differently (so picks are not all ties).
    fn spread(ds: &[Destination]) {
        for (i, d) in ds.iter().enumerate() {
            for _ in 0..1 + i * 7 % 5 {
                d.state.bind(ConnClass::Active);
            }
            for _ in 0..(i * 3 % 11) {
                d.state.bind(ConnClass::Inactive);
            }
        }
    }

    #[test]
    fn notified_listeners_keep_no_destination_alive() {
        // A notification leaves the registration in this thread's listener cache: that must
        // not hold the destinations' state (the service trash tells by strong counts whether
        // connections still hold a removed destination). 40 destinations: indexed.
        let weights: Vec<u32> = (1..=40).collect();
        let ds = dests(&weights);
        let s = sched::build(SchedulerKind::Wlc, &ds, SchedFlags::NONE, None);
        assert!(ds[0].state.has_listener());
        ds[0].state.bind(ConnClass::Active);
        ds[2].state.unbind(ConnClass::Active);
        assert_eq!(
            s.schedule(&ds, &flow(1), Time::ZERO),
            kernel(SchedulerKind::Wlc, &ds)
        );
        drop(s);
        for d in &ds {
            assert_eq!(
                std::sync::Arc::strong_count(&d.state),
                1,
                "only the Destination holds it"
            );
        }
    }

    #[test]
    fn a_thread_that_notified_the_old_index_reaches_the_new_one() {
        // Thread t notifies (caching snapshot 1's registration), the rules are rebuilt, t
        // notifies again: snapshot 2's index must see it, through t's cache. 40
        // destinations (indexed), all but the first two too loaded to matter.
        let ds = dests(&[1; 40]);
        for d in &ds[2..] {
            for _ in 0..5 {
                d.state.bind(ConnClass::Active);
            }
        }
        let s1 = sched::build(SchedulerKind::Lc, &ds, SchedFlags::NONE, None);
        assert!(ds[0].state.has_listener());
        let step = std::sync::Barrier::new(2);
        let s2 = std::thread::scope(|sc| {
            let (ds, step) = (&ds, &step);
            sc.spawn(move || {
                ds[0].state.bind(ConnClass::Active);
                step.wait(); // snapshot 2 is built while we wait
                step.wait();
                ds[1].state.bind(ConnClass::Active);
                ds[1].state.bind(ConnClass::Active);
            });
            step.wait();
            assert_eq!(s1.schedule(ds, &flow(1), Time::ZERO), Some(1));
            let s2 = sched::build(SchedulerKind::Lc, ds, SchedFlags::NONE, Some(&*s1));
            step.wait();
            s2
        });
        // The thread has finished (joined at the end of the scope).
        assert_eq!(
            s2.schedule(&ds, &flow(1), Time::ZERO),
            Some(0),
            "snapshot 2 saw the binds"
        );
    }

    #[test]
    fn several_binds_to_one_destination_between_picks() {
        // A burst accounts several connections to the same destination before the next
        // pick: the marks coalesce into one, and the next pick still sees every bind. 40
        // destinations: indexed.
        for kind in KINDS {
            let weights: Vec<u32> = (0..40).map(|i| 1 + i % 4).collect();
            let ds = dests(&weights);
            spread(&ds);
            let s = sched::build(kind, &ds, SchedFlags::NONE, None);
            for round in 0..40u32 {
                let picked = s.schedule(&ds, &flow(round), Time::ZERO);
                assert_eq!(picked, kernel(kind, &ds), "{kind} round {round}");
                let Some(p) = picked else { break };
                for _ in 0..1 + round % 3 {
                    ds[p].state.bind(ConnClass::Active);
                }
                if round % 4 == 0 {
                    ds[(p + 5) % ds.len()].state.unbind(ConnClass::Active);
                }
            }
        }
    }

    #[test]
    fn changes_spread_over_many_bitmap_words_are_all_applied() {
        // 4200 destinations: 66 words of dirty bits, so words 0 and 64 (and 1 and 65, 63
        // and 127 ...) share a summary bit. Each round loads its first slot and unloads the
        // others (which then lead lc, wlc, sed and nq), all between two picks.
        let rounds: [&[usize]; 4] = [
            &[0, 4096, 4160],
            &[1, 65, 4161, 4199],
            &[63, 4159, 4095],
            &[5, 70, 3000],
        ];
        for kind in KINDS {
            for (round, slots) in rounds.iter().enumerate() {
                let ds: Vec<Destination> = (0..4200u32)
                    .map(|i| {
                        Destination::new(crate::dest::DestConfig {
                            weight: 1 + i % 7,
                            ..crate::dest::DestConfig::new(
                                std::net::Ipv4Addr::from(0x0A01_0000 + i).into(),
                                80,
                            )
                        })
                    })
                    .collect();
                spread(&ds);
                let s = sched::build(kind, &ds, SchedFlags::NONE, None);
                assert_eq!(s.schedule(&ds, &flow(0), Time::ZERO), kernel(kind, &ds), "{kind}");
                for _ in 0..3 {
                    ds[slots[0]].state.bind(ConnClass::Active);
                }
                for &i in &slots[1..] {
                    while ds[i].state.active_conns() > 0 {
                        ds[i].state.unbind(ConnClass::Active);
                    }
                    while ds[i].state.inactive_conns() > 0 {
                        ds[i].state.unbind(ConnClass::Inactive);
                    }
                }
                ds[slots[slots.len() - 1]].state.set_ramp(512);
                let got = s.schedule(&ds, &flow(1), Time::ZERO);
                assert_eq!(got, kernel(kind, &ds), "{kind} round {round}");
            }
        }
    }

    const KINDS: [SchedulerKind; 6] = [
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
    ];

    /// Applies load change `op` (with argument `x`) to `d`, as connections and the control
    /// plane do: binds, releases, state changes, thresholds, slow-start ramps.
    fn change(d: &Destination, op: u8, x: u32) {
        match op {
            0 => d.state.bind(ConnClass::Active),
            1 => d.state.unbind(ConnClass::Active),
            2 => d.state.bind(ConnClass::Inactive),
            3 => d.state.unbind(ConnClass::Inactive),
            4 => d.state.reclassify(ConnClass::Active, ConnClass::Inactive),
            5 => d.state.reclassify(ConnClass::Inactive, ConnClass::Active),
            _ if x > 1024 => d.state.set_thresholds(x % 8, 0),
            _ => d.state.set_ramp(x),
        }
    }

    /// The largest [`scan_max`](super::scan_max) of the kinds tested here.
    const MAX: usize = 32;

    /// A pool size for `kind` from a random `(small, x)`: scanned (up to its scan_max) when
    /// `small`, else indexed (up to three times that).
    fn pool_size(kind: SchedulerKind, (small, x): (bool, usize)) -> usize {
        let m = super::scan_max(kind);
        if small { 1 + x % m } else { m + 1 + x % (2 * m) }
    }

    /// Loads for up to `3 × MAX` destinations: (weight, active, inactive, upper
    /// threshold code).
    fn setups() -> impl Strategy<Value = Vec<(u32, u32, u32, u32)>> {
        proptest::collection::vec((0u32..6, 0u32..4, 0u32..300, 0u32..6), 3 * MAX)
    }

    /// Destinations with the first `n` of `setup`'s weights and loads.
    fn loaded(n: usize, setup: &[(u32, u32, u32, u32)]) -> Vec<Destination> {
        let weights: Vec<u32> = setup[..n].iter().map(|s| s.0).collect();
        let ds = dests(&weights);
        for (d, &(_, a, i, upper)) in ds.iter().zip(setup) {
            d.state.set_thresholds(if upper > 3 { upper * 2 } else { 0 }, 0);
            for _ in 0..a {
                d.state.bind(ConnClass::Active);
            }
            for _ in 0..i {
                d.state.bind(ConnClass::Inactive);
            }
        }
        ds
    }

    proptest! {
        #[test]
        fn pick_equals_the_kernel_scan_scanned_or_indexed(
            kind in 0usize..6,
            size in (any::<bool>(), 0usize..1000),
            setup in setups(),
            ops in proptest::collection::vec((0usize..64, 0u8..7, 0u32..1100), 0..80),
        ) {
            let kind = KINDS[kind];
            let n = pool_size(kind, size);
            let ds = loaded(n, &setup);
            let s = sched::build(kind, &ds, SchedFlags::NONE, None);
            // Scanned pools register no listener; indexed ones register on every destination.
            for d in &ds {
                prop_assert_eq!(d.state.has_listener(), n > super::scan_max(kind));
            }
            prop_assert_eq!(s.schedule(&ds, &flow(0), Time::ZERO), kernel(kind, &ds));
            for (slot, op, x) in ops {
                change(&ds[slot % ds.len()], op, x);
                let picked = s.schedule(&ds, &flow(x), Time::ZERO);
                prop_assert_eq!(picked, kernel(kind, &ds), "{} after op {} on slot {}", kind, op, slot % ds.len());
                // A real new connection binds the picked destination.
                if let Some(i) = picked
                    && x % 3 == 0
                {
                    ds[i].state.bind(ConnClass::Active);
                    prop_assert_eq!(s.schedule(&ds, &flow(x), Time::ZERO), kernel(kind, &ds));
                }
            }
        }

        #[test]
        fn small_pool_follows_every_load_change_with_no_listener(
            kind in 0usize..6,
            x in 0usize..1000,
            setup in setups(),
            ops in proptest::collection::vec((0usize..64, 0u8..7, 0u32..1100), 0..200),
        ) {
            // Connections' whole lives on a scanned pool: every pick, right after any
            // bind, release, state change, threshold or ramp change, is the kernel's.
            let kind = KINDS[kind];
            let n = pool_size(kind, (true, x));
            let ds = loaded(n, &setup);
            let s = sched::build(kind, &ds, SchedFlags::NONE, None);
            let mut live: Vec<usize> = Vec::new();
            for (slot, op, x) in ops {
                match (op, live.is_empty()) {
                    // A new connection on the pick, inactive (SYN) first.
                    (0, _) => {
                        let picked = s.schedule(&ds, &flow(x), Time::ZERO);
                        prop_assert_eq!(picked, kernel(kind, &ds));
                        if let Some(i) = picked {
                            ds[i].state.bind(ConnClass::Inactive);
                            live.push(i);
                        }
                    }
                    // One of them reaches ESTABLISHED.
                    (1, false) => {
                        let i = live[slot % live.len()];
                        ds[i].state.reclassify(ConnClass::Inactive, ConnClass::Active);
                    }
                    // One of them is released.
                    (2, false) => {
                        let i = live.swap_remove(slot % live.len());
                        ds[i].state.unbind(ConnClass::Active);
                    }
                    _ => change(&ds[slot % ds.len()], op, x),
                }
                prop_assert!(ds.iter().all(|d| !d.state.has_listener()));
                prop_assert_eq!(s.schedule(&ds, &flow(x), Time::ZERO), kernel(kind, &ds));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn editing_the_service_across_scan_max_switches_mode_without_a_wrong_pick(
            kind in 0usize..6,
            sizes in proptest::collection::vec((any::<bool>(), 0usize..1000), 2..6),
            ops in proptest::collection::vec((0usize..64, 0u8..7, 0u32..1100), 30),
        ) {
            // One service edited through the table: destinations added at the front (as
            // `ipvsadm -a` does) or removed, so its size crosses scan_max both ways. Every
            // snapshot's picks follow the live counters, which carry over the edits.
            use crate::dest::DestConfig;
            use crate::service::{Protocol, ServiceConfig, ServiceKey, ServiceTable};
            let kind = KINDS[kind];
            let all: Vec<DestConfig> = (0..3 * MAX as u32)
                .map(|i| DestConfig {
                    weight: 1 + i % 5,
                    ..DestConfig::new(std::net::Ipv4Addr::from(0x0A01_0000 + i).into(), 80)
                })
                .collect();
            let table = ServiceTable::new();
            let mut cfg = ServiceConfig::new(ServiceKey::Addr {
                proto: Protocol::Tcp,
                addr: [10, 0, 0, 1].into(),
                port: 80,
            });
            cfg.scheduler = kind;
            for (step, &size) in sizes.iter().enumerate() {
                let n = pool_size(kind, size);
                // The n most recently added destinations, newest first.
                cfg.dests = all[..n].iter().rev().cloned().collect();
                let set = table.publish(std::slice::from_ref(&cfg));
                let svc = &set.services()[0];
                for d in &svc.dests {
                    prop_assert_eq!(d.state.has_listener(), n > super::scan_max(kind));
                }
                for &(slot, op, x) in &ops {
                    change(&svc.dests[slot % n], op, x);
                    let picked = svc.schedule(&flow(x), Time::ZERO).map(|d| d.config.addr);
                    let want = kernel(kind, &svc.dests).map(|i| svc.dests[i].config.addr);
                    prop_assert_eq!(picked, want, "{} step {} (n = {})", kind, step, n);
                }
            }
        }
    }
}
