//! lvs packet pipeline: zero-copy header views, the NAT/FULLNAT/DR/TUN transforms and packet
//! I/O backends. The pipeline is a pure function of (frame, tables, now) → (frame, verdict).

// Unsafe code is allowed only in the I/O backends (`io::afpacket`, `io::afxdp`) and their
// syscall and bpf(2) layers (`io::sys`, `io::bpf`), each block with a SAFETY comment.
#![deny(unsafe_code)]

pub mod hold;
pub mod io;
pub mod neigh;
pub mod pipeline;
#[doc(hidden)]
pub mod pipeline_fuzzing;
pub mod route;
pub mod verdict;
pub mod wire;
pub mod worker;
pub mod xlate;

// The README's examples run as doc-tests (`cargo test --workspace`), without becoming this
// crate's documentation.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
