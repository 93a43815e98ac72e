//! The hash functions of the kernel's hashing schedulers, bit for bit: the IPv6 address fold,
//! `hash_32` (dh, sh, lblc, lblcr) and `hsiphash` as a 64-bit kernel computes it (mh).

use std::net::IpAddr;

/// The kernel's `GOLDEN_RATIO_32` (include/linux/hash.h).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// The kernel's `hash_32(val, bits)`: multiply by the golden ratio and keep the top `bits`.
#[inline]
pub(super) fn hash_32(val: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits));
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// The IPVS schedulers' `addr_fold` in host order: an IPv4 address as a number, an IPv6
/// address as the XOR of its four 32-bit words.
#[inline]
pub(super) fn addr_fold(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => {
            let w = u128::from(*a);
            (w >> 96) as u32 ^ (w >> 64) as u32 ^ (w >> 32) as u32 ^ w as u32
        }
    }
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-c-d of `msg` under the key `(k0, k1)` (k0 = the key's first 8 bytes, little-endian).
pub(super) fn siphash(c: usize, d: usize, key: [u64; 2], msg: &[u8]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key[0],
        0x646f_7261_6e64_6f6d ^ key[1],
        0x6c79_6765_6e65_7261 ^ key[0],
        0x7465_6462_7974_6573 ^ key[1],
    ];
    let mut chunks = msg.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        for _ in 0..c {
            sip_round(&mut v);
        }
        v[0] ^= m;
    }
    let mut b = (msg.len() as u64) << 56;
    for (i, byte) in chunks.remainder().iter().enumerate() {
        b |= (*byte as u64) << (8 * i);
    }
    v[3] ^= b;
    for _ in 0..c {
        sip_round(&mut v);
    }
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..d {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The kernel's `hsiphash(&v, 4, key)` on a 64-bit little-endian machine: SipHash-1-3 of the
/// four bytes of `v` in memory order, truncated to 32 bits (lib/siphash.c).
#[inline]
pub(super) fn hsiphash_u32(v: u32, key: [u64; 2]) -> u32 {
    siphash(1, 3, key, &v.to_le_bytes()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    fn msg(len: usize) -> Vec<u8> {
        (0..len as u8).collect()
    }

    #[test]
    fn siphash_2_4_matches_reference_vectors() {
        // The SipHash reference vectors (key 00..0f, message 00..len-1), also in the kernel's
        // lib/siphash_kunit.c.
        for (len, want) in [
            (0, 0x726f_db47_dd0e_0e31u64),
            (4, 0xcf27_94e0_2771_87b7),
            (8, 0x93f5_f579_9a93_2462),
            (15, 0xa129_ca61_49be_45e5),
            (16, 0x3f2a_cc7f_57c2_9bdb),
        ] {
            assert_eq!(siphash(2, 4, TEST_KEY, &msg(len)), want, "len {len}");
        }
    }

    #[test]
    fn hsiphash_matches_kernel_64bit_vectors() {
        // test_vectors_hsiphash of lib/siphash_kunit.c for BITS_PER_LONG == 64.
        for (len, want) in [
            (0, 0x050f_c4dcu32),
            (4, 0x88d3_8328),
            (8, 0x8d29_9a8e),
            (15, 0x2a51_9956),
        ] {
            assert_eq!(siphash(1, 3, TEST_KEY, &msg(len)) as u32, want, "len {len}");
        }
        assert_eq!(hsiphash_u32(0x0302_0100, TEST_KEY), 0x88d3_8328);
    }

    #[test]
    fn hash_32_keeps_top_bits_of_golden_ratio_product() {
        // 10.0.0.1 = 0x0a000001; 0x0a000001 * 0x61c88647 mod 2^32 = 0x27c88647 (worked out
        // apart: 0x0a * 0x47 = 0x2c6, so the high term adds 0xc6 << 24).
        assert_eq!(0x0a00_0001u32.wrapping_mul(GOLDEN_RATIO_32), 0x27c8_8647);
        assert_eq!(hash_32(0x0a00_0001, 8), 0x27);
        assert_eq!(hash_32(0x0a00_0001, 10), 0x9f);
        assert_eq!(hash_32(0, 8), 0);
    }

    #[test]
    fn ipv6_fold_xors_the_four_words() {
        let a: IpAddr = "2001:db8::1:0:0:1".parse().unwrap();
        // Words 2001:0db8, 0000:0000, 0001:0000, 0000:0001.
        assert_eq!(addr_fold(&a), 0x2001_0db8 ^ 0x0001_0000 ^ 0x0000_0001);
        let v4: IpAddr = "192.168.1.2".parse().unwrap();
        assert_eq!(addr_fold(&v4), 0xc0a8_0102);
    }
}
