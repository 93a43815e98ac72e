//! The connection listing of `ipvsadm -L -n -c` (and `--persistent-conn`), with ipvsadm's
//! exact columns: `%-3s %-6s %-11s %-18s %-18s %s` for protocol, expire (`mm:ss`), state,
//! source, virtual and destination; IPv6 addresses as `[addr]:port`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::state::ConnState;
use crate::dest::ForwardMethod;
use crate::service::Protocol;

/// One live entry as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Protocol; `None` for a fwmark template (listed as `IP`).
    pub proto: Option<Protocol>,
    /// True for a persistence template.
    pub template: bool,
    /// State (`NONE` for templates).
    pub state: ConnState,
    /// Client address and port (masked address and port 0 for a template).
    pub client: SocketAddr,
    /// Virtual address and port (the mark as an address for a fwmark template).
    pub virt: SocketAddr,
    /// Real server address and port.
    pub dest: SocketAddr,
    /// FULLNAT local address and port.
    pub local: Option<SocketAddr>,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// Time left before expiry.
    pub expires: Duration,
    /// For a template: connections it currently controls.
    pub controlled: u32,
}

fn addrport(sa: &SocketAddr) -> String {
    match sa {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The header lines (`IPVS connection entries` and the column titles).
pub fn listing_header(persistent_conn: bool) -> String {
    let mut s = String::from("IPVS connection entries\n");
    // ipvsadm: "pro expire %-11s %-18s %-18s %s" (with "%-18s %-16s %s" for the pe columns).
    let titles = [("state", 11), ("source", 18), ("virtual", 18)];
    s.push_str("pro expire");
    for (t, w) in titles {
        let _ = write!(s, " {t:<w$}");
    }
    if persistent_conn {
        let _ = writeln!(s, " {:<18} {:<16} pe_data", "destination", "pe name");
    } else {
        s.push_str(" destination\n");
    }
    s
}

/// One row, newline included. Expire is whole seconds left as `mm:ss` (minutes may exceed
/// two digits, as in ipvsadm). lvs has no persistence engines, so rows never carry the
/// `pe name`/`pe_data` columns, as ipvsadm prints entries without them.
pub fn listing_row(c: &ConnInfo) -> String {
    let secs = c.expires.as_secs();
    let expire = format!("{:02}:{:02}", secs / 60, secs % 60);
    let proto = c.proto.map_or("IP", |p| p.name());
    format!(
        "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
        proto,
        expire,
        c.state.name(),
        addrport(&c.client),
        addrport(&c.virt),
        addrport(&c.dest)
    )
}

/// The whole `-L -n -c` text for `entries` (in the order given).
pub fn listing<'a>(entries: impl IntoIterator<Item = &'a ConnInfo>, persistent_conn: bool) -> String {
    let mut s = listing_header(persistent_conn);
    for c in entries {
        s.push_str(&listing_row(c));
    }
    s
}
