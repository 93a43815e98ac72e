//! The Internet checksum (RFC 1071): full computation, pseudo-header sums and the incremental
//! updates of RFC 1624.
//!
//! Vocabulary: a *sum* is the folded 16-bit one's-complement sum of some bytes (taken as
//! big-endian 16-bit words, an odd trailing byte padded with zero); a *checksum* is the
//! complement of the sum of everything it covers, as stored in a header. Sums combine with
//! [`add`], so a transport checksum is `!add(pseudo_header_v4(..), sum(segment))`.
//!
//! Incremental updates use RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 it never
//! turns a valid non-zero-data checksum into the 0xFFFF "negative zero", so an updated checksum
//! is bit-for-bit equal to a full recomputation (the property tests check this) — with one
//! exception no update formula can avoid: when the covered data becomes all zeros, the full
//! checksum is 0xFFFF and the update gives 0x0000. TCP, UDP and the IPv4 header can never be all
//! zeros (protocol or version are non-zero), but an ICMPv4 echo reply with id 0, seq 0 and no
//! data can; the fuzz target found it. UDP's special
//! case (0 means "no checksum" over IPv4, and a computed 0 is sent as 0xFFFF) is handled by
//! [`update_udp`] and the UDP view.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement addition of two 16-bit sums (end-around carry).
#[inline(always)]
pub fn add(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    s + carry as u16
}

/// Fold a wide accumulator of 16-bit words into a 16-bit one's-complement sum.
#[inline(always)]
fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// One's-complement sum of `data` (big-endian words, odd last byte padded with zero).
///
/// Sums native-endian 32-bit words into a 64-bit accumulator (the order of bytes in a word does
/// not matter to a one's-complement sum, RFC 1071 §2(B)) and folds once at the end.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        // Eight 32-bit words per step; a u64 cannot overflow for any realistic buffer.
        let mut s: u64 = 0;
        for w in c.chunks_exact(4) {
            s += u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
        }
        acc += s;
    }
    let mut words = chunks.remainder().chunks_exact(4);
    for w in &mut words {
        acc += u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_ne_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += u16::from_ne_bytes([rest[i], 0]) as u64;
    }
    // The folded value is in memory (native) byte order; reading its bytes as big-endian gives
    // the sum of big-endian words.
    u16::from_be_bytes(fold(acc).to_ne_bytes())
}

/// The Internet checksum of `data`: `!sum(data)`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// [`checksum`] of a 20-byte header (an IPv4 header without options) in ten fixed loads.
#[inline]
pub fn checksum20(h: &[u8; 20]) -> u16 {
    let mut acc = 0u64;
    for w in h.chunks_exact(2) {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Sum of the IPv4 pseudo-header (RFC 793/768): addresses, protocol, L4 length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u16::from_be_bytes([s[0], s[1]]) as u64
        + u16::from_be_bytes([s[2], s[3]]) as u64
        + u16::from_be_bytes([d[0], d[1]]) as u64
        + u16::from_be_bytes([d[2], d[3]]) as u64
        + protocol as u64
        + (len >> 16) as u64
        + (len & 0xffff) as u64;
    fold(acc)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u16 {
    let mut acc = protocol_len(next_header, len);
    acc = add(acc, sum(&src.octets()));
    add(acc, sum(&dst.octets()))
}

#[inline(always)]
fn protocol_len(protocol: u8, len: u32) -> u16 {
    fold(protocol as u64 + (len >> 16) as u64 + (len & 0xffff) as u64)
}

/// RFC 1624 eqn. 3 for one changed 16-bit word: `!(!hc + !old + new)`.
#[inline(always)]
pub fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    !add(add(!hc, !old), new)
}

/// RFC 1624 update for a changed 32-bit field (an IPv4 address, a TCP sequence number).
#[inline(always)]
pub fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = (!hc) as u64
        + (!(old >> 16) & 0xffff) as u64
        + (!old & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(acc)
}

/// RFC 1624 update for a changed IPv4 address.
#[inline(always)]
pub fn update_ipv4(hc: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(hc, u32::from(old), u32::from(new))
}

/// RFC 1624 update for a changed 16-byte IPv6 address.
#[inline]
pub fn update_ipv6(hc: u16, old: &Ipv6Addr, new: &Ipv6Addr) -> u16 {
    update_bytes(hc, &old.octets(), &new.octets())
}

/// RFC 1624 update for a changed run of bytes starting at an even offset of the covered data.
///
/// `old` and `new` must have the same length; an odd length is treated as if the run were
/// followed by a zero byte in both (correct only when the run ends the covered data or the
/// byte after it is unchanged and the run length is even — use even lengths).
#[inline]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    !add(add(!hc, !sum(old)), sum(new))
}

/// [`update_u16`] for a UDP checksum: a 0 (no checksum, IPv4 only) stays 0, and a result of 0 is
/// stored as 0xFFFF (RFC 768).
#[inline(always)]
pub fn update_udp(hc: u16, old: u16, new: u16) -> u16 {
    if hc == 0 {
        return 0;
    }
    match update_u16(hc, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// [`update_u32`] for a UDP checksum (see [`update_udp`]).
#[inline(always)]
pub fn update_udp_u32(hc: u16, old: u32, new: u32) -> u16 {
    if hc == 0 {
        return 0;
    }
    match update_u32(hc, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// [`update_ipv6`] for a UDP checksum (see [`update_udp`]; over IPv6 a UDP checksum of 0 is
/// invalid, and it is left alone like in the IPv4 case).
#[inline]
pub fn update_udp_ipv6(hc: u16, old: &Ipv6Addr, new: &Ipv6Addr) -> u16 {
    if hc == 0 {
        return 0;
    }
    match update_ipv6(hc, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += w as u32;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn checksum20_equals_checksum() {
        let mut h = [0u8; 20];
        assert_eq!(checksum20(&h), checksum(&h));
        h = [0xff; 20];
        assert_eq!(checksum20(&h), checksum(&h));
        for seed in 0..2000u32 {
            for (i, b) in h.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2_654_435_761) >> (i % 24)) as u8 ^ (i as u8).wrapping_mul(37);
            }
            assert_eq!(checksum20(&h), checksum(&h), "{h:02x?}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        assert_eq!(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn sum_matches_naive_for_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(167) ^ 0x5a) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(sum(&data[..len]), naive(&data[..len]), "len {len}");
        }
        assert_eq!(sum(&[0xff; 200]), 0xffff);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn rfc1624_negative_zero_case() {
        // RFC 1624 §3 example: a header whose checksum is 0xDD2F has a field change from
        // 0x5555 to 0x3285; eqn. 3 gives 0x0000 where eqn. 2 would give 0xFFFF.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn udp_zero_rules() {
        assert_eq!(update_udp(0, 1, 2), 0, "no checksum stays absent");
        assert_eq!(
            update_udp(0xdd2f, 0x5555, 0x3285),
            0xffff,
            "computed zero is sent as 0xFFFF"
        );
    }
}
