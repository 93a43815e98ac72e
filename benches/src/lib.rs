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

/// The packet pipeline fixture shared by `benches/pipeline.rs` and the callgrind example
/// (`examples/pipeline_callgrind.rs`): one [`Pipeline`](lvs_dataplane::pipeline::Pipeline)
/// with a TCP service per forwarding method, 1M established connections inserted outside any
/// measurement, and precomputed 64-byte frames of random ones.
pub mod pipeline {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use lvs_core::conn::{ConnKeyIn, ConnState, ConnTable, Direction, NewConn, TcpFlags};
    use lvs_core::rules::RuleSet;
    use lvs_core::{ForwardMethod, Protocol, ServiceTable, Time};
    use lvs_dataplane::io::{FrameBuf, HEADROOM};
    use lvs_dataplane::neigh::NeighTable;
    use lvs_dataplane::pipeline::{Interface, Pipeline, Tables, Worker};
    use lvs_dataplane::route::{Route, RouteTable};
    use lvs_dataplane::verdict::Verdict;
    use lvs_dataplane::wire::checksum;
    use lvs_dataplane::xlate::lip::LipPool;

    use super::Rng;

    /// Frames processed per iteration (one receive burst).
    pub const BURST: usize = 32;
    /// Length of every benchmark frame: Ethernet 14 + IPv4 20 + TCP 20 + 10 bytes of data.
    pub const FRAME_LEN: usize = 64;
    /// Live connections in the table (a quarter per forwarding method).
    pub const CONNS: usize = 1 << 20;
    /// Distinct precomputed frames per case (random connections of its method), cycled.
    pub const FRAMES: usize = 1 << 16;
    /// Distinct new-connection SYNs, cycled; each burst's connections are removed after it.
    pub const NEW_KEYS: usize = 1 << 15;
    /// Bursts between two housekeeping rounds of the new-connection case.
    pub const HOUSEKEEPING_EVERY: usize = 256;

    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
    const GW: [u8; 4] = [192, 168, 0, 254];
    const DIP: [u8; 4] = [10, 1, 255, 1];
    /// Real servers per service.
    pub const SERVERS: usize = 16;

    /// The forwarding methods, in the order of the connection quarters.
    pub const METHODS: [ForwardMethod; 4] = [
        ForwardMethod::Masq,
        ForwardMethod::FullNat,
        ForwardMethod::DirectRoute,
        ForwardMethod::Tunnel,
    ];

    fn method_index(m: ForwardMethod) -> usize {
        METHODS.iter().position(|&x| x == m).expect("method")
    }

    /// The VIP of the service of method number `m` (port 80).
    pub fn vip(m: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 10 + m as u8)
    }

    /// Real server `d` of the service of method number `m`.
    pub fn rip(m: usize, d: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, m as u8, 10 + d as u8)
    }

    fn rs_mac(m: usize, d: usize) -> [u8; 6] {
        [0x02, 0, 0, 1, m as u8, d as u8]
    }

    /// LIPs of the FULLNAT service.
    pub fn lip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 254, 1 + i as u8)
    }
    const LIPS: usize = 8;

    /// Client `i`: a distinct address in 100.64.0.0/10 and a port.
    pub fn client(i: usize) -> (Ipv4Addr, u16) {
        let x = (i as u32).wrapping_mul(0x9E37_79B1) >> 10; // spread, still distinct below 2^22
        (
            Ipv4Addr::from(0x6440_0000 | (x & 0x003f_ffff)),
            1024 + (i >> 22) as u16,
        )
    }

    /// A 64-byte Ethernet + IPv4 + TCP frame with 10 bytes of data and valid checksums.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp4_frame(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        flags: u8,
        ttl: u8,
    ) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&50u16.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = ttl;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut f[34..64];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&1001u32.to_be_bytes());
        t[8..12].copy_from_slice(&5001u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..30].copy_from_slice(b"0123456789");
        let ph = checksum::pseudo_header_v4(src, dst, 6, 30);
        let c = !checksum::add(ph, checksum::sum(&f[34..64]));
        f[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    const TCP_SYN: u8 = 0x02;
    const TCP_ACK: u8 = 0x10;

    /// The lab: pipeline, one worker, the tables, and the frames of every case.
    pub struct Lab {
        /// The pipeline.
        pub pipeline: Arc<Pipeline>,
        /// Worker 0.
        pub worker: Worker,
        /// The connection table.
        pub conns: Arc<ConnTable>,
        /// Time the connections were established at.
        pub base: Time,
        /// Client → VIP ACKs of established connections, per method (in [`METHODS`] order).
        pub established: [Vec<[u8; FRAME_LEN]>; 4],
        /// Real server → client ACKs of established NAT connections.
        pub nat_reply: Vec<[u8; FRAME_LEN]>,
        /// SYNs of clients with no connection, to the NAT VIP.
        pub new_syns: Vec<[u8; FRAME_LEN]>,
        /// Keys of `new_syns` (to remove their connections after each burst).
        pub new_keys: Vec<ConnKeyIn>,
    }

    impl std::fmt::Debug for Lab {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Lab").field("conns", &self.conns.len()).finish()
        }
    }

    fn rules() -> String {
        let mut s = String::new();
        let flag = ["-m", "--fullnat", "-g", "-i"];
        for (m, flag) in flag.iter().enumerate() {
            s += &format!("-A -t {}:80 -s wlc\n", vip(m));
            for d in 0..SERVERS {
                let port = if m < 2 { ":8080" } else { "" };
                s += &format!("-a -t {}:80 -r {}{port} {flag}\n", vip(m), rip(m, d));
            }
        }
        s
    }

    impl Lab {
        /// Builds the lab with [`CONNS`] established connections (takes a second or two).
        pub fn new(seed: u64) -> Lab {
            Lab::with_conns(CONNS, seed)
        }

        /// Builds the lab with `conns` established connections.
        pub fn with_conns(conns: usize, seed: u64) -> Lab {
            let mut rs = RuleSet::new();
            rs.apply_batch(&rules()).expect("bench rules parse");
            let services = Arc::new(ServiceTable::new());
            let set = services.publish(&rs.services);
            let table = Arc::new(ConnTable::with_capacity(conns + (conns >> 4) + 4096));
            let neigh = Arc::new(NeighTable::new());
            neigh.insert(IpAddr::from(GW), GW_MAC);
            for m in 0..4 {
                for d in 0..SERVERS {
                    neigh.insert(IpAddr::V4(rip(m, d)), rs_mac(m, d));
                }
            }
            let routes = Arc::new(RouteTable::new(vec![
                Route {
                    prefix: [10, 1, 0, 0].into(),
                    len: 16,
                    iface: 1,
                    gateway: None,
                },
                Route {
                    prefix: [0, 0, 0, 0].into(),
                    len: 0,
                    iface: 0,
                    gateway: Some(GW.into()),
                },
            ]));
            let lip_addrs: Vec<IpAddr> = (0..LIPS).map(|i| IpAddr::V4(lip(i))).collect();
            let lips = Arc::new(LipPool::new(&lip_addrs, 1024, 65535));
            let tables = Tables {
                services,
                conns: table.clone(),
                neigh,
                routes,
                lips: lips.clone(),
            };
            let ifaces = vec![
                Interface {
                    name: "outside".into(),
                    mac: OUR_MAC,
                    mtu: 1500,
                    ipv4: Some([192, 168, 0, 1].into()),
                    ipv6: None,
                },
                Interface {
                    name: "inside".into(),
                    mac: OUR_MAC,
                    mtu: 1500,
                    ipv4: Some(DIP.into()),
                    ipv6: None,
                },
            ];
            let pipeline = Pipeline::new(tables, ifaces);
            let worker = pipeline.worker(0);
            let base = Time::from_secs(1000);
            pipeline.housekeeping(base, 0);

            // The connections, a quarter per method, driven to ESTABLISHED.
            let per = conns / 4;
            for i in 0..per * 4 {
                let m = i / per;
                let svc = set
                    .lookup(Protocol::Tcp, IpAddr::V4(vip(m)), 80)
                    .expect("service");
                let d = i % SERVERS;
                let dest = svc
                    .dests
                    .iter()
                    .find(|x| x.config.addr == IpAddr::V4(rip(m, d)))
                    .expect("dest");
                let (caddr, cport) = client(i);
                let key = ConnKeyIn::new(
                    Protocol::Tcp,
                    SocketAddr::new(caddr.into(), cport),
                    SocketAddr::new(vip(m).into(), 80),
                );
                let method = METHODS[m];
                let local = (method == ForwardMethod::FullNat)
                    .then(|| {
                        lips.allocate(IpAddr::V4(caddr))
                            .map(|(a, p)| SocketAddr::new(a, p))
                    })
                    .flatten();
                let dport = if dest.config.port == 0 {
                    80
                } else {
                    dest.config.port
                };
                let nc = NewConn {
                    key,
                    method,
                    dest_addr: SocketAddr::new(dest.config.addr, dport),
                    local,
                    dest: &dest.state,
                    template: None,
                };
                let c = table.insert(nc, base).expect("fixture fits");
                table.on_packet(&c, Direction::Input, TcpFlags::SYN, base);
                if matches!(method, ForwardMethod::Masq | ForwardMethod::FullNat) {
                    table.on_packet(&c, Direction::Output, TcpFlags::SYN | TcpFlags::ACK, base);
                }
                let st = table.on_packet(&c, Direction::Input, TcpFlags::ACK, base);
                assert_eq!(st, Some(ConnState::Established), "fixture connection established");
            }
            pipeline.housekeeping(base, 0);

            // Frames of random established connections.
            let mut rng = Rng::new(seed);
            let established = std::array::from_fn(|m| {
                (0..FRAMES)
                    .map(|_| {
                        let i = m * per + rng.below(per as u64) as usize;
                        let (caddr, cport) = client(i);
                        tcp4_frame(OUR_MAC, GW_MAC, caddr, cport, vip(m), 80, TCP_ACK, 60)
                    })
                    .collect()
            });
            let nat_reply = (0..FRAMES)
                .map(|_| {
                    let i = rng.below(per as u64) as usize;
                    let d = i % SERVERS;
                    let (caddr, cport) = client(i);
                    tcp4_frame(OUR_MAC, rs_mac(0, d), rip(0, d), 8080, caddr, cport, TCP_ACK, 64)
                })
                .collect();
            // New clients: 198.18.0.0/15, absent from the table.
            let mut new_syns = Vec::with_capacity(NEW_KEYS);
            let mut new_keys = Vec::with_capacity(NEW_KEYS);
            for i in 0..NEW_KEYS {
                let caddr = Ipv4Addr::from(0xc612_0000 | (i as u32 & 0x1_ffff));
                let cport = 1024 + rng.below(60000) as u16;
                new_syns.push(tcp4_frame(OUR_MAC, GW_MAC, caddr, cport, vip(0), 80, TCP_SYN, 60));
                new_keys.push(ConnKeyIn::new(
                    Protocol::Tcp,
                    SocketAddr::new(caddr.into(), cport),
                    SocketAddr::new(vip(0).into(), 80),
                ));
            }
            let _ = method_index;
            Lab {
                pipeline,
                worker,
                conns: table,
                base,
                established,
                nat_reply,
                new_syns,
                new_keys,
            }
        }

        /// The established-flow frames of `method`.
        pub fn established_frames(&self, method: ForwardMethod) -> &[[u8; FRAME_LEN]] {
            &self.established[method_index(method)]
        }
    }

    /// Receive buffers for one burst: each frame is copied in at [`HEADROOM`] before it is
    /// processed (processing rewrites it in place), as an RX path hands over fresh frames.
    #[derive(Debug)]
    pub struct Burst {
        bufs: Vec<[u8; HEADROOM + 128]>,
        /// Verdicts of the last burst.
        pub verdicts: [Verdict; BURST],
    }

    impl Default for Burst {
        fn default() -> Self {
            Burst::new()
        }
    }

    impl Burst {
        /// Empty buffers.
        pub fn new() -> Burst {
            Burst {
                bufs: vec![[0u8; HEADROOM + 128]; BURST],
                verdicts: [Verdict::Pass; BURST],
            }
        }

        /// Copies `frames` (exactly [`BURST`]) into the buffers and processes them as one
        /// burst ([`Worker::process_burst`]: prefetch, then each frame) on interface
        /// `ingress` at `now`. Returns how many were forwarded.
        #[inline]
        pub fn run(&mut self, w: &mut Worker, frames: &[[u8; FRAME_LEN]], ingress: u16, now: Time) -> usize {
            let mut bufs = self.bufs.iter_mut().zip(frames);
            let mut fbs: [FrameBuf<'_>; BURST] = std::array::from_fn(|_| {
                let (buf, frame) = bufs.next().expect("a full burst of frames");
                buf[HEADROOM..HEADROOM + FRAME_LEN].copy_from_slice(frame);
                FrameBuf::new(&mut buf[..], HEADROOM, FRAME_LEN)
            });
            w.process_burst(&mut fbs, ingress, now, &mut self.verdicts);
            self.verdicts
                .iter()
                .filter(|v| matches!(v, Verdict::Forward { .. }))
                .count()
        }

        /// [`run`](Self::run) one frame at a time through [`Worker::process`] (no prefetch),
        /// for comparison.
        #[inline]
        pub fn run_each(
            &mut self,
            w: &mut Worker,
            frames: &[[u8; FRAME_LEN]],
            ingress: u16,
            now: Time,
        ) -> usize {
            let mut fwd = 0;
            for ((buf, frame), v) in self.bufs.iter_mut().zip(frames).zip(self.verdicts.iter_mut()) {
                buf[HEADROOM..HEADROOM + FRAME_LEN].copy_from_slice(frame);
                let mut fb = FrameBuf::new(&mut buf[..], HEADROOM, FRAME_LEN);
                *v = w.process(&mut fb, ingress, now);
                fwd += matches!(*v, Verdict::Forward { .. }) as usize;
            }
            fwd
        }
    }
}
