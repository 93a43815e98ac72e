//! SCTP: the common header and its CRC32c checksum (RFC 4960 appendix B), recomputed when a
//! NAT rewrites a port (addresses are not covered by SCTP's checksum).

/// IP protocol number of SCTP.
pub const PROTO: u8 = 132;
/// Length of the SCTP common header.
pub const HEADER_LEN: usize = 12;
const CHECKSUM: usize = 8;

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = crc32c_table();

/// CRC32c (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !data
        .iter()
        .fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

/// Recomputes the checksum of the SCTP packet in `pkt` (common header + chunks).
pub fn fill_checksum(pkt: &mut [u8]) {
    if pkt.len() < HEADER_LEN {
        return;
    }
    pkt[CHECKSUM..CHECKSUM + 4].fill(0);
    let c = crc32c(pkt);
    // The CRC is stored in network order of its reflected value: least significant byte first.
    pkt[CHECKSUM..CHECKSUM + 4].copy_from_slice(&c.to_le_bytes());
}

/// True when the SCTP packet's checksum is correct.
pub fn verify_checksum(pkt: &[u8]) -> bool {
    if pkt.len() < HEADER_LEN {
        return false;
    }
    let stored = u32::from_le_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
    let mut copy = pkt.to_vec();
    copy[CHECKSUM..CHECKSUM + 4].fill(0);
    crc32c(&copy) == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn fill_then_verify() {
        let mut p = vec![0u8; 28];
        p[0..4].copy_from_slice(&[0x13, 0x88, 0x00, 0x50]);
        fill_checksum(&mut p);
        assert!(verify_checksum(&p));
        p[20] ^= 1;
        assert!(!verify_checksum(&p));
    }
}
