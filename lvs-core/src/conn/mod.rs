//! The connection table: lock-free lookups from both sides, the IPVS TCP state machine and
//! timeouts, persistence templates and expiry.
//!
//! # Design
//!
//! * **Arena.** Every entry lives in a preallocated arena of `capacity + capacity/8 + 256`
//!   slots (the slack holds entries already dead but not yet handed back by the
//!   housekeeper). Entry fields are atomics; nothing is ever deallocated, only recycled.
//! * **Seqlock generations.** Each entry's control word carries a 24-bit generation: even
//!   while the entry is live, odd while it is dead or being (re)written. A reader loads the
//!   control word, the key fields and the data, then loads the control word again; a
//!   changed generation means "not this entry". A freed slot bumps the generation, so a
//!   stale index slot or a stale [`ConnRef`] can never yield another connection. This is
//!   the reclamation scheme: safe Rust, no epochs (lvs-core forbids `unsafe`).
//! * **Two indexes.** Client side (proto, CIP:cport → VIP:vport) and server side (proto,
//!   RIP:rport → CIP:cport for NAT, RIP:rport → LIP:lport for FULLNAT), each a lock-free
//!   open-addressing array of cache-line buckets (see `index.rs`). DR/TUN entries are in the
//!   client-side index only. Templates share the client-side index under their own kind.
//! * **Lookups** take no lock, never write shared memory and never allocate. Inserts and
//!   removals take no lock either: a CAS on the free list (tagged Treiber stack), CASes on
//!   the index slots, an atomic on the live count.
//! * **Expiry** is a timer wheel owned by whoever calls [`ConnTable::expire`] (a
//!   housekeeping call, never per packet): packets move an entry's deadline with one store,
//!   and the wheel re-files entries whose deadline moved when it reaches them.
//! * **Time is an argument**: every call that needs the time takes `now`.
//!
//! # Details worth knowing
//!
//! * **Memory.** An entry is 128 bytes (`repr(C)`, two cache lines; the first holds the
//!   control word, CIP, VIP, ports and RIP: everything a lookup reads). The arena has
//!   `capacity × 9/8 + 256` slots, the wheel 8 bytes of links per slot, and each index has
//!   one 64-byte bucket per 3.5 keys (at most 50 % of its slots used, so nearly every key
//!   sits in its home bucket). At 1M entries that is 189.6 bytes per configured entry
//!   ([`ConnTable::bytes_per_entry`]). The 96-byte goal is not met: four IPv6-capable
//!   addresses are 64 bytes by themselves; an IPv4-only arena of 64-byte entries with the
//!   indexes at 80 % load would come to about 100 bytes.
//! * **Destination reference.** Each entry holds an `Arc<DestState>` behind a per-entry
//!   lock, taken only at insert, at death and when a state change moves the connection
//!   between active and inactive, never by lookups. An `ArcSwapOption` there made
//!   insert+remove cost over 500 ns (debt payment on every store) against 350 ns now.
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
//!   the `secure_tcp` table (`tcp_states_dos`) is not implemented. No loom model: the
//!   atomics protocols are checked by a bounded multi-thread stress test in the normal
//!   test suite (`tests/conn_stress.rs`).
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
mod seqlock;
mod state;
mod table;
mod wheel;

pub use list::{ConnInfo, listing, listing_header, listing_row};
pub use state::{ConnState, DEFAULT_TIMEOUTS, Direction, STATES, TcpFlags, Timeouts, tcp_transition};
pub use table::{
    ConnCounters, ConnKeyIn, ConnKeyOut, ConnRef, ConnTable, ENTRY_BYTES, ENTRY_BYTES_V6, NewConn,
    PREFETCH_BURST, TableFull, TemplateKey, TemplateRef,
};
