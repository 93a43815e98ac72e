//! Test fixtures shared by the hashing and locality scheduler tests.

use std::net::{IpAddr, Ipv4Addr};

use super::FlowKey;
use crate::dest::{ConnClass, DestConfig, Destination};
use crate::service::Protocol;

/// A destination 10.0.1.`host`:80 with weight `weight`.
pub(super) fn dest(host: u8, weight: u32) -> Destination {
    Destination::new(DestConfig {
        weight,
        ..DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, host)), 80)
    })
}

/// Destinations 10.0.1.1.. with the given weights, in list order.
pub(super) fn dests(weights: &[u32]) -> Vec<Destination> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| dest(i as u8 + 1, w))
        .collect()
}

/// A TCP flow from `src`:`sport` to `dst`:80.
pub(super) fn flow(src: IpAddr, sport: u16, dst: IpAddr) -> FlowKey {
    FlowKey {
        proto: Protocol::Tcp,
        src,
        src_port: sport,
        dst,
        dst_port: 80,
    }
}

/// The IPv4 address with numeric value `n`.
pub(super) fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Gives `d` `n` more active connections.
pub(super) fn add_active(d: &Destination, n: u32) {
    for _ in 0..n {
        d.state.bind(ConnClass::Active);
    }
}

/// Gives `d` `n` more inactive connections.
pub(super) fn add_inactive(d: &Destination, n: u32) {
    for _ in 0..n {
        d.state.bind(ConnClass::Inactive);
    }
}

/// Marks `d` OVERLOADED (upper threshold 1, reached by one inactive connection).
pub(super) fn overload(d: &Destination) {
    d.state.set_thresholds(1, 0);
    d.state.bind(ConnClass::Inactive);
    assert!(d.state.is_overloaded());
}
