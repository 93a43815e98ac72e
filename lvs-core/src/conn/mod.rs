//! The connection table: lock-free lookups from both sides, the IPVS TCP state machine and
//! timeouts, persistence templates and expiry.
