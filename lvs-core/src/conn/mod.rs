//! The connection table: lock-free lookups from both sides, the IPVS TCP state machine and
//! timeouts, persistence templates and expiry.
//!
//! # Design
//!
//! * **Arenas.** IPv4 connections live in a preallocated arena of
//!   `capacity + capacity/8 + 256` one-cache-line (64-byte) entries (the slack holds
//!   entries already dead but not yet handed back by the housekeeper); IPv6 connections in
//!   a second arena of as many 128-byte slots (the same 64-byte header plus a line of four
//!   IPv6 addresses), allocated in segments of 4096 slots on first use. A slot number below the IPv4 arena's length is
//!   an IPv4 slot, above it an IPv6 one. Entry fields are atomics; nothing is ever
//!   deallocated, only recycled.
//! * **Seqlock generations** (`seqlock.rs`). Each entry's control word carries a 24-bit
//!   generation: even while the entry is live, odd while it is dead or being (re)written. A
//!   reader loads the control word, the key fields and the data, then loads the control
//!   word again; a changed generation means "not this entry". A freed slot bumps the
//!   generation, so a stale index slot or a stale [`ConnRef`] can never yield another
//!   connection. This is the reclamation scheme: safe Rust, no epochs (lvs-core forbids
//!   `unsafe`).
//! * **Two indexes.** Client side (proto, CIP:cport → VIP:vport) and server side (proto,
//!   RIP:rport → CIP:cport for NAT, RIP:rport → LIP:lport for FULLNAT), each a lock-free
//!   open-addressing array of cache-line buckets of fourteen 4-byte slots (see
//!   `index.rs`). DR/TUN entries are in the client-side index only. Templates share the
//!   client-side index under their own kind.
//! * **Lookups** take no lock, never write shared memory and never allocate. Inserts and
//!   removals take no lock either: a CAS on the free list (tagged Treiber stack), CASes on
//!   the index slots, an atomic on the live count and one on the destination's entry count
//!   in the registry (see below).
//! * **Expiry** is a timer wheel owned by whoever calls [`ConnTable::expire`] (a
//!   housekeeping call, never per packet): packets move an entry's deadline with one store,
//!   and the wheel re-files entries whose deadline moved when it reaches them.
//! * **Time is an argument**: every call that needs the time takes `now`.
//!
//! # Details worth knowing
//!
//! * **Memory.** An IPv4 entry is 64 bytes (`repr(C)`, one cache line: control word,
//!   addresses, ports, deadline, template link, free/pending/reschedule links and the timer
//!   wheel links). Each index has one 64-byte bucket per 6.75 keys: fourteen 4-byte slots
//!   (48 % used on average) in two halves, each key preferring one half, so a probe usually
//!   reads seven slots and nearly every key and miss is settled by its home bucket. A slot
//!   is `tag | slot number`; the tag takes the bits the slot numbers leave (10 at 1M
//!   entries). At 1M entries that is 91.0 bytes per configured entry
//!   ([`ConnTable::bytes_per_entry`]), within the issue's 96. An IPv6 entry takes 128 bytes,
//!   163.0 per entry with the indexes ([`ConnTable::bytes_per_entry_v6`]), allocated only
//!   as IPv6 connections arrive (the IPv6 arena's high-water mark stays allocated).
//!   Capacity is limited to 100M entries (both arenas' slot numbers fit 28 bits).
//! * **Speed** (1M IPv4 NAT entries, this shared 2-core Zen 5 VM, best of 3000 bursts of
//!   4096 lookups; criterion's `conntable` figures run a few ns higher under load): a
//!   batched hit about 37 ns with loads in the burst stages (44 with the previous 128-byte
//!   entries), a batched miss about 26 ns (24), a single hit about 115 ns (155), an insert plus remove with its share of
//!   housekeeping about 280 ns (320).
//! * **What bounds a batched lookup** (`benches/examples/layout_probe.rs`, a model of
//!   the same layout): not page walks. Putting each bucket and its entries in one 4 KB
//!   page (half the pages per key) changed nothing, huge pages gained about 5 %. What
//!   mattered is how many of a burst's misses the CPU keeps in flight: a load that misses
//!   holds the reorder window until its line arrives, and a mispredicted tag match in
//!   the bucket scan throws away the work queued behind it. So the burst stages bring
//!   lines in with prefetch instructions (x86-64 `prefetcht0`, the one `unsafe` block of
//!   lvs-core, in `prefetch.rs`; elsewhere the stages load unless the embedder registers
//!   one with [`ConnTable::set_prefetch`]) and pick the candidate without data-dependent
//!   branches: criterion `conntable/lookup_hit/1M` 40–48 → 28–36 ns, `lookup_miss/1M`
//!   31–36 → 20–23 ns (A/B, alternated, loaded machine).
//! * **Bursts.** [`ConnTable::prefetch_in_hinted`] / [`ConnTable::prefetch_out_hinted`] hash
//!   a burst's keys, bring in their home buckets, pick each key's candidate entry and
//!   bring in its line as soon as the bucket names it, and hand back a [`LookupHint`] per
//!   key (hash, home bucket, candidate slot); the lookup of that key
//!   ([`ConnTable::lookup_in_hinted`], [`ConnTable::lookup_out_hinted`]) verifies the
//!   candidate under the seqlock and probes the index with the kept hash only if it does
//!   not match, so an entry inserted or removed between prefetch and lookup is seen as
//!   by a plain lookup. Each key is hashed once and its bucket scanned once per burst; the
//!   scan matches a tag with one xor and one compare per slot (`slot ^ tag` is below the
//!   lowest tag bit exactly on a match, and is then the slot number), without branches.
//! * **Per packet.** [`ConnTable::on_packet`] is inline: one load of the control word, one
//!   mask test for the common segment (an ACK without SYN/FIN/RST on an ESTABLISHED TCP
//!   connection) and one deadline store; other packets take the TCP transition, and one
//!   deadline store when the state stays; a state change within
//!   the same class (e.g. NONE → SYN_RECV) adds one CAS; a change of class (into or out of
//!   ESTABLISHED, destination counters to move), a lost race and an earlier deadline go out
//!   of line. The handle ([`ConnRef`]) of an IPv4 connection copies the entry's two address
//!   words as they are. Pipeline figures under callgrind (`benches/examples/pipeline_callgrind.rs`,
//!   1M connections, instructions per packet, before → after the fourth round on the
//!   table): NAT established 829 → 756, FULLNAT 877 → 803, DR 772 → 704, TUN 865 → 800,
//!   NAT reply 877 → 804, new connection 2422 → 2128 (of which [`ConnTable::insert`] 696 →
//!   469, its destination's own bookkeeping in `DestState::bind` aside).
//! * **Insert.** A connection with IPv4 ends is written in 32-bit words straight to its
//!   one line (both hashes from the same words, the control word's kind bits from one
//!   table by method and protocol); claiming a slot, the index slots and the duplicate
//!   check are inline, their rare cases (full table, spilled half, a duplicate) out of line.
//! * **A burst of new connections** ([`ConnTable::stage4`], [`ConnTable::commit4_batch`]).
//!   An insert writes two index buckets; the client-side one is warm (the burst prefetch
//!   brought it in for the lookup that missed), the server-side one is not known before the
//!   scheduler has picked the real server, and waiting for it was a third of a new
//!   connection's time. So an IPv4 insert comes in two halves: `stage4` takes the slot,
//!   writes the entry with its first packet's state already applied (a SYN: NONE →
//!   SYN_RECV, as `on_packet` would), accounts it in its destination at once (the
//!   scheduler's next pick sees it, exactly as after `insert`) and asks for the
//!   server-side bucket's line; `commit4_batch`, once per burst chunk (earlier when a
//!   frame of the chunk leaves the fast path), publishes the staged
//!   entries, files them in both indexes, settles duplicate races and puts them on the
//!   housekeeper's list with one exchange. Until its commit a staged connection is found by
//!   nobody: the pipeline commits before any frame that could belong to one is looked up (a
//!   later packet of the same flow in the burst, any frame on the general path) and before
//!   the burst's frames leave. `insert` runs the same two halves back to back. A burst
//!   also takes the capacity of its new connections in one step
//!   ([`ConnTable::reserve_burst`]), and a key the burst prefetch found absent
//!   ([`LookupHint::absent`]) skips the lookup's index probe. Pipeline criterion
//!   `nat/new_conn`: 283–344 → 137–142 ns per connection (A/B, alternated, with the small
//!   pools' scanning schedulers).
//! * **Destination reference** (`dests.rs`). An entry keeps only its destination's id (27
//!   bits of a connection's control word, a template's `aux` word). The table's registry
//!   maps ids to `Arc<DestState>` with a count of the entries referencing each; reads are
//!   lock-free (an `ArcSwap`ped immutable map, which each thread caches and revalidates
//!   with one load of a version number); a lock is taken only when a destination gets its
//!   first entry, and by [`ConnTable::expire`] when it drops destinations whose last entry
//!   died since its previous run (so connections that come and go one at a time do not
//!   re-register their destination each time). A thread's cached map may keep a
//!   destination state alive a little longer, until that thread next uses the table. Two
//!   live destination states with the same id (ids wrap after 2^27 of them) cannot be told
//!   apart: the second one's connections are refused with [`TableFull`].
//! * **Counters stay exact.** A state change that reclassifies the connection marks the
//!   entry BUSY in the same CAS that changes the state; a concurrent removal waits for the
//!   reclassification to finish before releasing the destination's counter, so active and
//!   inactive counts always equal the live entries in each class.
//! * **Duplicates.** Two workers that insert the same client-side key at once both publish;
//!   each then looks for the other and the entry in the higher slot is removed, so exactly
//!   one survives and both callers get it.
//! * **Full table.** New connections are refused (counted in `refused_full`); established
//!   ones are never evicted. Before refusing, an insert samples 32 arena slots and
//!   reclaims one connection still in SYN_RECV or SYNACK (`reclaimed_synrecv`), the
//!   kernel's drop_entry defence against SYN floods, bounded.
//! * **Housekeeping cadence.** Removed entries are recycled by the next
//!   [`ConnTable::expire`]; the arena's `capacity/8 + 256` spare slots hold them meanwhile.
//!   An insert that finds no spare slot drains the pending and removed lists itself if no
//!   housekeeping is running (bounded by the number of dead entries, never a scan); if
//!   removals outpace housekeeping further, inserts are refused and counted until it runs.
//! * **Expiry.** A wheel of 4096 slots of 250 ms. A packet moves the deadline (one store);
//!   a deadline that moves earlier (e.g. ESTABLISHED → CLOSE) puts the entry on a small
//!   lock-free list that the next [`ConnTable::expire`] re-files. Templates are re-armed
//!   while they control connections, and live `timeout` after the last one ends.
//! * **Not here.** One-packet scheduling (`--ops`) creates no entry: the pipeline does not
//!   call [`ConnTable::insert`] for such services. SCTP has one state (ESTABLISHED, 900 s);
//!   the `secure_tcp` table (`tcp_states_dos`) is not implemented.
//! * **Checking the atomics.** The index, the seqlock protocol and the free-list stacks are
//!   written against the `atomic` module (std's atomics here); the `loom-models` workspace
//!   crate compiles those same files against loom's atomics and model-checks small races
//!   (`cargo test -p loom-models`). The whole table is exercised by a bounded multi-thread
//!   stress test (`tests/conn_stress.rs`).
//!
//! # Pipeline use
//!
//! ```
//! use std::sync::Arc;
//! use lvs_core::conn::*;
//! use lvs_core::{DestState, ForwardMethod, Protocol, Time};
//!
//! let table = ConnTable::with_capacity(1024);
//! let dest = Arc::new(DestState::new(0, 0));
//! let key = ConnKeyIn::new(Protocol::Tcp, "10.0.0.1:40000".parse().unwrap(), "192.0.2.1:80".parse().unwrap());
//! let now = Time::from_secs(1);
//! // First packet: miss, schedule (not shown), insert, feed the packet's flags.
//! assert!(table.lookup_in(&key).is_none());
//! let conn = table
//!     .insert(NewConn::new(key, ForwardMethod::Masq, "10.1.0.5:8080".parse().unwrap(), &dest), now)
//!     .unwrap();
//! table.on_packet(&conn, Direction::Input, TcpFlags::SYN, now);
//! // Reply: found from the server side.
//! let reply = ConnKeyOut::new(Protocol::Tcp, "10.1.0.5:8080".parse().unwrap(), "10.0.0.1:40000".parse().unwrap());
//! let c = table.lookup_out(&reply).unwrap();
//! assert_eq!(table.on_packet(&c, Direction::Output, TcpFlags::SYN | TcpFlags::ACK, now), Some(ConnState::SynRecv));
//! // Housekeeping, from a timer: expires what is due, at most `budget` entries.
//! table.expire(Time::from_secs(2), 10_000);
//! ```

mod atomic;
mod dests;
mod freelist;
mod index;
mod list;
#[allow(unsafe_code)]
mod prefetch;
mod seqlock;
mod state;
mod table;
mod wheel;

pub use list::{ConnInfo, listing, listing_header, listing_row};
pub use state::{ConnState, DEFAULT_TIMEOUTS, Direction, STATES, TcpFlags, Timeouts, tcp_transition};
pub use table::{
    Conn4, ConnCounters, ConnKeyIn, ConnKeyIn4, ConnKeyOut, ConnKeyOut4, ConnRef, ConnTable, ENTRY_BYTES,
    ENTRY_BYTES_V6, LookupHint, NewConn, NewConn4, PREFETCH_BURST, Prefetch, Reservation, Staged4, TableFull,
    TemplateKey, TemplateRef,
};
