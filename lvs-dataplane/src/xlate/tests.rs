//! Rewrites checked against etherparse's own checksum computation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TransportHeader};
use proptest::prelude::*;

use super::*;

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn checksums_ok(frame: &[u8]) -> bool {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let ip_ok = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => ip.calc_header_checksum() == ip.header_checksum,
        _ => true,
    };
    let l4_ok = match (&h.net, &h.transport, &h.payload) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            t.calc_checksum_ipv4(ip, p).unwrap() == t.checksum
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            t.calc_checksum_ipv6(ip, p).unwrap() == t.checksum
        }
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            u.checksum == 0 || u.calc_checksum_ipv4(ip, p).unwrap() == u.checksum
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            u.calc_checksum_ipv6(ip, p).unwrap() == u.checksum
        }
        other => panic!("unexpected parse {other:?}"),
    };
    ip_ok && l4_ok
}

fn frame(v6: bool, tcp: bool, s: [u8; 16], d: [u8; 16], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(A, B);
    let b = if v6 {
        b.ipv6(s, d, 64)
    } else {
        b.ipv4([s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]], 64)
    };
    let mut out = Vec::new();
    if tcp {
        let b = b.tcp(sp, dp, 1000, 65535).syn();
        b.write(&mut out, payload).unwrap();
    } else {
        let b = b.udp(sp, dp);
        b.write(&mut out, payload).unwrap();
    }
    out
}

/// An IPv4 [`frame`] with TTL `ttl` (header checksum fixed) and, for UDP with
/// `no_udp_csum`, no UDP checksum.
#[allow(clippy::too_many_arguments)]
fn frame4_ttl(
    tcp: bool,
    s: [u8; 16],
    d: [u8; 16],
    sp: u16,
    dp: u16,
    payload: &[u8],
    ttl: u8,
    no_udp_csum: bool,
) -> Vec<u8> {
    let mut f = frame(false, tcp, s, d, sp, dp, payload);
    f[14 + 8] = ttl;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = crate::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    if !tcp && no_udp_csum {
        f[34 + 6..34 + 8].copy_from_slice(&[0, 0]);
    }
    f
}

fn addr(v6: bool, b: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

proptest! {
    #[test]
    fn rewrites_keep_every_checksum_valid(
        v6 in any::<bool>(), tcp in any::<bool>(),
        s in any::<[u8; 16]>(), d in any::<[u8; 16]>(), n in any::<[u8; 16]>(), m in any::<[u8; 16]>(),
        sp in 1u16.., dp in 1u16.., np in 1u16.., mp in 1u16..,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        ttl_steps in 0u8..3,
    ) {
        let mut f = frame(v6, tcp, s, d, sp, dp, &payload);
        let mut ip = parse_ip(&f, 14, v6).unwrap();
        prop_assert_eq!((ip.sport, ip.dport), (sp, dp));
        prop_assert!(ip.l4_present);
        rewrite(&mut f, &mut ip, End::Dst, addr(v6, n), np);
        rewrite(&mut f, &mut ip, End::Src, addr(v6, m), mp);
        for _ in 0..ttl_steps {
            prop_assert!(decrement_ttl(&mut f, &mut ip));
        }
        prop_assert!(checksums_ok(&f));
        let again = parse_ip(&f, 14, v6).unwrap();
        prop_assert_eq!(again, ip, "IpInfo tracks the rewritten packet");
        prop_assert_eq!(again.ttl, 64 - ttl_steps);
    }
}

#[test]
fn ttl_one_is_not_decremented() {
    let mut f = frame(
        false,
        true,
        [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        1,
        2,
        b"x",
    );
    f[14 + 8] = 1;
    let mut ip = parse_ip(&f, 14, false).unwrap();
    assert!(!decrement_ttl(&mut f, &mut ip));
    assert_eq!(f[14 + 8], 1);
}

#[test]
fn truncated_and_bad_headers_are_malformed() {
    let f = frame(false, true, [1; 16], [2; 16], 1, 2, b"");
    for cut in [14, 20, 33, 40, 50] {
        assert_eq!(
            parse_ip(&f[..cut], 14, false),
            Err(DropReason::Malformed),
            "cut at {cut}"
        );
    }
    let mut bad = f.clone();
    bad[14] = 0x44; // IHL 4
    assert_eq!(parse_ip(&bad, 14, false), Err(DropReason::Malformed));
}

proptest! {
    /// The fused IPv4 forwarding rewrite writes the same bytes as its three steps one by
    /// one (TTL, then source, then destination), for TCP and UDP (also UDP without checksum),
    /// with or without either end changing.
    #[test]
    fn forward_v4_equals_ttl_then_rewrites(
        tcp in any::<bool>(),
        s in any::<[u8; 16]>(), d in any::<[u8; 16]>(), n in any::<[u8; 16]>(), m in any::<[u8; 16]>(),
        sp in 1u16.., dp in 1u16.., np in 1u16.., mp in 1u16..,
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        which in 0u8..4, same_addr in any::<bool>(), no_udp_csum in any::<bool>(), ttl in 2u8..,
    ) {
        let mut f = frame4_ttl(tcp, s, d, sp, dp, &payload, ttl, no_udp_csum);
        let (n, m) = if same_addr { (d, s) } else { (n, m) };
        let src = (which & 1 != 0).then(|| (Ipv4Addr::new(m[0], m[1], m[2], m[3]), mp));
        let dst = (which & 2 != 0).then(|| (Ipv4Addr::new(n[0], n[1], n[2], n[3]), np));
        let mut want = f.clone();
        let mut wip = parse_ip(&want, 14, false).unwrap();
        prop_assert!(decrement_ttl(&mut want, &mut wip));
        if let Some((a, p)) = src {
            rewrite(&mut want, &mut wip, End::Src, IpAddr::V4(a), p);
        }
        if let Some((a, p)) = dst {
            rewrite(&mut want, &mut wip, End::Dst, IpAddr::V4(a), p);
        }
        let mut ip = parse_ip(&f, 14, false).unwrap();
        prop_assert!(forward_v4(&mut f, &mut ip, src, dst));
        prop_assert_eq!(&f, &want);
        prop_assert_eq!(ip, wip);
        prop_assert!(checksums_ok(&f));
    }

    /// The fixed-offset rewrite from the parsed `Fast4` writes the same bytes as the
    /// `IpInfo` one, for TCP and UDP (also UDP without checksum), with or without either end
    /// changing, and leaves a TTL of 1 or 0 alone.
    #[test]
    fn forward_fast4_equals_forward_v4(
        tcp in any::<bool>(),
        s in any::<[u8; 16]>(), d in any::<[u8; 16]>(), n in any::<[u8; 16]>(), m in any::<[u8; 16]>(),
        sp in 1u16.., dp in 1u16.., np in 1u16.., mp in 1u16..,
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        which in 0u8..4, same_addr in any::<bool>(), same_port in any::<bool>(),
        no_udp_csum in any::<bool>(), ttl in any::<u8>(),
    ) {
        let mut f = frame4_ttl(tcp, s, d, sp, dp, &payload, ttl, no_udp_csum);
        let (n, m) = if same_addr { (d, s) } else { (n, m) };
        let (np, mp) = if same_port { (dp, sp) } else { (np, mp) };
        let src = (which & 1 != 0).then(|| (Ipv4Addr::new(m[0], m[1], m[2], m[3]), mp));
        let dst = (which & 2 != 0).then(|| (Ipv4Addr::new(n[0], n[1], n[2], n[3]), np));
        let h = parse_fast4(&f).expect("a plain frame");
        prop_assert_eq!(h.info(), parse_ip(&f, 14, false).unwrap());
        let mut want = f.clone();
        let mut ip = h.info();
        let done = forward_v4(&mut want, &mut ip, src, dst);
        let num = |e: Option<(Ipv4Addr, u16)>| e.map(|(a, p)| (u32::from(a), p));
        prop_assert_eq!(forward_fast4(&mut f, &h, num(src), num(dst)), done);
        prop_assert_eq!(done, ttl > 1);
        prop_assert_eq!(&f, &want);
        if done {
            prop_assert!(checksums_ok(&f));
        }
    }

    /// The fixed-offset parser answers exactly like Ethernet + `parse_ip` whenever it
    /// answers, and answers for plain TCP/UDP over IPv4 frames.
    #[test]
    fn parse_fast_v4_agrees_with_parse_ip(
        tcp in any::<bool>(), s in any::<[u8; 16]>(), d in any::<[u8; 16]>(),
        sp in any::<u16>(), dp in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..32),
        pokes in proptest::collection::vec((0usize..80, any::<u8>()), 0..3),
        cut in 0usize..90,
    ) {
        let mut f = frame(false, tcp, s, d, sp, dp, &payload);
        let plain = parse_fast_v4(&f);
        prop_assert_eq!(plain, Some(parse_ip(&f, 14, false).unwrap()));
        for (at, b) in pokes {
            if at < f.len() {
                f[at] = b;
            }
        }
        f.truncate(cut.max(1).min(f.len()));
        if let Some(fast) = parse_fast_v4(&f) {
            prop_assert_eq!(Ok(fast), parse_ip(&f, 14, false));
            prop_assert_eq!(&f[12..14], &[0x08, 0x00]);
        }
    }
}

/// The RFC 1624 change of a 32-bit field summed from its four 16-bit halves (the
/// textbook form `delta32` replaces).
fn delta32_by_halves(o: u32, n: u32) -> u64 {
    (!(o >> 16) & 0xffff) as u64 + (!o & 0xffff) as u64 + (n >> 16) as u64 + (n & 0xffff) as u64
}

proptest! {
    /// `delta32` (two 32-bit words, folded once) updates any checksum to the same value as
    /// the sum of 16-bit halves, alone or with other changes (the TTL's 0xfeff, a port).
    #[test]
    fn delta32_updates_checksums_as_the_sum_of_halves(
        o in any::<u32>(), n in any::<u32>(), o2 in any::<u32>(), n2 in any::<u32>(),
        hc in any::<u16>(), extra in 0u64..0x2_0000,
    ) {
        for (a, b) in [(o, n), (0xffff_ffff, 0), (0, 0xffff_ffff), (o, o), (0xffff_0000, 0x0000_ffff)] {
            prop_assert!(delta32(a, b) < 1 << 18);
            prop_assert_eq!(apply_delta(hc, delta32(a, b)), apply_delta(hc, delta32_by_halves(a, b)));
            let two = delta32(a, b) + delta32(o2, n2) + extra;
            let two_halves = delta32_by_halves(a, b) + delta32_by_halves(o2, n2) + extra;
            prop_assert_eq!(apply_delta(hc, two), apply_delta(hc, two_halves));
        }
    }
}
