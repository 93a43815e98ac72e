//! Stable replay of the `wire` fuzz target: every checked-in corpus frame, then a few thousand
//! random and mutated frames from a fixed-seed PRNG, all through the same invariant function
//! the cargo-fuzz target runs (`lvs_dataplane::wire::fuzzing::check_frame`).

use std::path::PathBuf;

use lvs_dataplane::wire::fuzzing::*;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("dir entry").path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read corpus file"),
            )
        })
        .collect();
    files.sort();
    files
}

/// xorshift64*: a tiny fixed-seed PRNG so the replay is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What each hand-made seed must reach: the views parse it as the frame it was built to be.
const EXPECTED: &[(&str, u32)] = &[
    ("arp_request", REACHED_ARP),
    (
        "icmp4_echo",
        REACHED_IPV4 | REACHED_ICMPV4 | REACHED_VALID_CHECKSUM,
    ),
    ("icmp4_frag_needed", REACHED_ICMPV4 | REACHED_QUOTED),
    (
        "icmp6_neighbor_advert",
        REACHED_ICMPV6 | REACHED_NDP | REACHED_VALID_CHECKSUM,
    ),
    (
        "icmp6_neighbor_solicit",
        REACHED_ICMPV6 | REACHED_NDP | REACHED_VALID_CHECKSUM,
    ),
    (
        "icmp6_packet_too_big",
        REACHED_ICMPV6 | REACHED_QUOTED | REACHED_VALID_CHECKSUM,
    ),
    ("ipv4_first_fragment", REACHED_IPV4 | REACHED_FRAGMENT),
    ("ipv4_later_fragment", REACHED_IPV4 | REACHED_FRAGMENT),
    (
        "ipv6_later_fragment",
        REACHED_IPV6 | REACHED_IPV6_EXT | REACHED_FRAGMENT,
    ),
    ("qinq_udp4", REACHED_VLAN | REACHED_UDP | REACHED_VALID_CHECKSUM),
    (
        "tcp4_ipopts_payload",
        REACHED_IPV4_OPTIONS | REACHED_TCP | REACHED_VALID_CHECKSUM,
    ),
    (
        "tcp4_syn_options",
        REACHED_TCP | REACHED_TCP_OPTIONS | REACHED_VALID_CHECKSUM,
    ),
    (
        "tcp6_syn",
        REACHED_IPV6 | REACHED_TCP | REACHED_TCP_OPTIONS | REACHED_VALID_CHECKSUM,
    ),
    ("truncated_ipv6", REACHED_ETHERNET),
    ("truncated_tcp4", REACHED_ETHERNET),
    ("truncated_vlan", REACHED_ETHERNET),
    ("udp4_dns", REACHED_IPV4 | REACHED_UDP | REACHED_VALID_CHECKSUM),
    ("udp4_no_checksum_padded", REACHED_IPV4 | REACHED_UDP),
    (
        "udp6_ext_headers",
        REACHED_IPV6 | REACHED_IPV6_EXT | REACHED_UDP | REACHED_VALID_CHECKSUM,
    ),
    ("vlan_tcp4", REACHED_VLAN | REACHED_TCP | REACHED_VALID_CHECKSUM),
];

#[test]
fn corpus_seeds_parse_as_built() {
    let files = corpus();
    assert!(files.len() >= 12, "corpus has only {} files", files.len());
    let mut union = 0;
    for (name, data) in &files {
        let cov = check_frame(data);
        union |= cov.0;
        if let Some(&(_, want)) = EXPECTED.iter().find(|(n, _)| n == name) {
            assert!(
                cov.has(want),
                "{name}: reached {:#x}, expected at least {want:#x}",
                cov.0
            );
        }
    }
    for (name, _) in EXPECTED {
        assert!(
            files.iter().any(|(n, _)| n == name),
            "seed {name} missing from the corpus"
        );
    }
    // Truncated seeds stop at Ethernet; a truncated TCP frame must not reach TCP.
    let trunc = &files.iter().find(|(n, _)| n == "truncated_tcp4").unwrap().1;
    assert!(!check_frame(trunc).has(REACHED_IPV4));
    assert_eq!(union & REACHED_ARP, REACHED_ARP);
}

#[test]
fn random_and_mutated_frames_keep_invariants() {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut union = 0u32;
    let mut deep = 0usize;
    for i in 0..6000 {
        let frame = if i % 6 == 0 {
            // Pure random bytes.
            let n = rng.below(160);
            (0..n).map(|_| rng.next() as u8).collect::<Vec<_>>()
        } else {
            // A seed with a few mutations: byte overwrites, bit flips, truncation, growth.
            let mut f = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(5) {
                    0 | 1 if !f.is_empty() => {
                        let at = rng.below(f.len());
                        f[at] = rng.next() as u8;
                    }
                    2 if !f.is_empty() => {
                        let at = rng.below(f.len());
                        f[at] ^= 1 << rng.below(8);
                    }
                    3 if !f.is_empty() => {
                        let n = rng.below(f.len());
                        f.truncate(n);
                    }
                    _ => {
                        let n = rng.below(32);
                        f.extend((0..n).map(|_| rng.next() as u8));
                    }
                }
            }
            f
        };
        let cov = check_frame(&frame);
        union |= cov.0;
        if cov.has(REACHED_TCP) || cov.has(REACHED_UDP) || cov.has(REACHED_ICMPV4) || cov.has(REACHED_ICMPV6)
        {
            deep += 1;
        }
    }
    // The mutations must not only bounce off the Ethernet header: many reach L4, and together
    // they reach every layer.
    assert!(deep > 1000, "only {deep} frames reached L4");
    let all = REACHED_VLAN
        | REACHED_ARP
        | REACHED_IPV4_OPTIONS
        | REACHED_IPV6_EXT
        | REACHED_TCP_OPTIONS
        | REACHED_NDP
        | REACHED_QUOTED
        | REACHED_FRAGMENT;
    assert_eq!(union & all, all, "reached {union:#x}");
}
