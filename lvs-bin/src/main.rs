//! The `lvs` binary: daemon, ipvsadm-compatible administration, demo lab.
#![forbid(unsafe_code)]

use clap::Parser;

/// Userspace Linux Virtual Server.
#[derive(Debug, Parser)]
#[command(name = "lvs", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
