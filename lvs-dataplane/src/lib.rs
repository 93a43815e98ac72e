//! lvs packet pipeline: zero-copy header views, the NAT/FULLNAT/DR/TUN transforms and packet
//! I/O backends. The pipeline is a pure function of (frame, tables, now) → (frame, verdict).

pub mod neigh;
pub mod verdict;
pub mod wire;
pub mod xlate;
