//! Sans-IO core of lvs: the IPVS model (virtual services and destinations), the fourteen
//! IPVS schedulers, the connection table, statistics and the ipvsadm rule language.
//!
//! Nothing here opens a socket, spawns a thread or reads the clock: callers pass the current
//! [`time::Time`] in, so every behaviour is testable on a fake clock and embeddable in any I/O
//! loop.
// Unsafe code only in the connection table's prefetch (conn/prefetch.rs), allowed there.
#![deny(unsafe_code)]

pub mod conn;
pub mod dest;
pub mod rules;
pub mod sched;
pub mod service;
pub mod stats;
pub mod time;

pub use dest::{DestConfig, DestState, Destination, ForwardMethod};
pub use sched::{FlowKey, Scheduler, SchedulerKind};
pub use service::{
    PersistNetmask, Persistence, Protocol, SchedFlags, ServiceConfig, ServiceKey, ServiceSet, ServiceTable,
    VirtualService,
};
pub use time::Time;
