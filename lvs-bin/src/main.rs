//! The `lvs` binary: daemon, ipvsadm-compatible administration, demo lab.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Userspace Linux Virtual Server.
#[derive(Debug, Parser)]
#[command(name = "lvs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Decapsulates IPIP / IPv6-in-IPv6 for a TUN-mode real server without the ipip module.
    Decap {
        /// Interface the tunnelled packets arrive on.
        #[arg(long)]
        iface: String,
        /// Name of the TUN device to create.
        #[arg(long, default_value = "lvsdecap0")]
        tun: String,
    },
    /// Runs a lab real server: HTTP and UDP echo answering "NAME CLIENT_IP:PORT".
    #[command(hide = true)]
    Testsrv {
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// HTTP listen address.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// UDP echo listen address.
        #[arg(long)]
        udp: Option<SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Decap { iface, tun } => match lvs_bin::decap::run(&iface, &tun) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs decap: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Testsrv { name, http, udp } => match lvs_bin::testsrv::serve(&name, http, udp) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs testsrv: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
