//! Shared fixtures for lvs's criterion benchmarks: deterministic destination lists with
//! random weights and counters, and flows that vary per iteration.

use std::net::{IpAddr, Ipv4Addr};

use lvs_core::dest::ConnClass;
use lvs_core::service::Protocol;
use lvs_core::{DestConfig, Destination, FlowKey};

/// A small deterministic PRNG (xorshift64*) so fixtures are the same on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `n` destinations 10.1.x.y:80 with weights 1..=100 and 0..40 active / 0..200 inactive
/// connections, for scheduler benchmarks.
pub fn sched_dests(n: usize, seed: u64) -> Vec<Destination> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let d = Destination::new(DestConfig {
                weight: 1 + rng.below(100) as u32,
                ..DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)), 80)
            });
            for _ in 0..rng.below(40) {
                d.state.bind(ConnClass::Active);
            }
            for _ in 0..rng.below(200) {
                d.state.bind(ConnClass::Inactive);
            }
            d
        })
        .collect()
}

/// `count` TCP flows to VIP 10.0.0.1:80 from random client addresses and ports.
pub fn flows(count: usize, seed: u64) -> Vec<FlowKey> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let x = rng.next_u64();
            FlowKey {
                proto: Protocol::Tcp,
                src: IpAddr::V4(Ipv4Addr::from(x as u32)),
                src_port: 1024 + ((x >> 32) as u16 % 64000),
                dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dst_port: 80,
            }
        })
        .collect()
}
