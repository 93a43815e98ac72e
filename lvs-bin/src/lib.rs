//! Library side of the `lvs` binary: the ipvsadm control plane and client, the control
//! socket, the namespace lab used by `lvs demo` and the end-to-end tests, and the small test
//! servers that run in it.
#![forbid(unsafe_code)]

pub mod adm;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decap;
pub mod demo;
pub mod floor;
pub mod health;
pub mod lab;
pub mod labbench;
pub mod loadgen;
pub mod testsrv;
