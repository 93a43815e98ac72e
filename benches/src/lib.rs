//! Shared fixtures for lvs's criterion benchmarks.
