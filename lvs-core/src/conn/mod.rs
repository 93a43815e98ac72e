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

mod index;
mod list;
mod state;
mod table;
mod wheel;

pub use list::{ConnInfo, listing, listing_header, listing_row};
pub use state::{ConnState, DEFAULT_TIMEOUTS, Direction, STATES, TcpFlags, Timeouts, tcp_transition};
pub use table::{
    ConnCounters, ConnKeyIn, ConnKeyOut, ConnRef, ConnTable, ENTRY_BYTES, NewConn, TableFull, TemplateKey,
    TemplateRef,
};
