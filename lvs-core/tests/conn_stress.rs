//! Concurrency stress: several threads insert, look up, drive states, remove and expire
//! the same small key set for a bounded time on a shared fake clock; then every entry is
//! checked for loss and duplication, and every counter is reconciled.

/// Named `conn` so that `cargo test -p lvs-core conn` selects these tests.
mod conn {
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use lvs_core::conn::*;
    use lvs_core::{DestConfig, DestState, Destination, ForwardMethod, PersistNetmask, Protocol, Time};
    use std::net::IpAddr;

    const KEYS: u16 = 512;
    const WORKERS: usize = 4;

    fn key(i: u16) -> ConnKeyIn {
        let c: SocketAddr = format!("10.0.{}.{}:{}", i / 200, i % 200 + 1, 1000 + i)
            .parse()
            .unwrap();
        ConnKeyIn::new(Protocol::Tcp, c, "192.0.2.1:80".parse().unwrap())
    }

    fn dest_addr(i: u16) -> SocketAddr {
        format!("10.1.0.{}:8080", i % 3 + 1).parse().unwrap()
    }

    fn method(i: u16) -> ForwardMethod {
        if i.is_multiple_of(4) {
            ForwardMethod::DirectRoute
        } else {
            ForwardMethod::Masq
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn v4_bits(a: IpAddr) -> u32 {
        match a {
            IpAddr::V4(v) => u32::from(v),
            IpAddr::V6(_) => unreachable!("IPv4 keys"),
        }
    }

    /// Commits the staged connections of a worker (with `staged`, [`run`]'s workers stage
    /// new connections and commit them in small batches, as the pipeline does per burst).
    fn commit(table: &ConnTable, pending: &mut Vec<Staged4>, reserved: &mut Reservation, now: Time) {
        table.commit4_batch(pending.drain(..), now, |_, r| {
            r.expect("an index had room");
        });
        table.unreserve(reserved);
    }

    fn run(capacity: usize, seed: u64) {
        run_with(capacity, seed, false);
    }

    fn run_with(capacity: usize, seed: u64, staged: bool) {
        let table = Arc::new(ConnTable::with_capacity(capacity));
        // Short timeouts so that expiry races with traffic.
        table.timeouts().set_state(ConnState::None, 1);
        table.timeouts().set_state(ConnState::SynRecv, 2);
        table.timeouts().set_state(ConnState::Close, 1);
        table.set_timeouts(3, 2, 0);
        let dests: Vec<Arc<DestState>> = (0..3).map(|_| Arc::new(DestState::new(0, 0))).collect();
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_millis(1500);

        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let (table, dests, clock, stop) = (&table, &dests, &clock, &stop);
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let mut ops = 0u64;
                    let mut pending: Vec<Staged4> = Vec::new();
                    let mut reserved = Reservation::default();
                    while ops < 3_000_000 && !stop.load(Ordering::Relaxed) {
                        ops += 1;
                        let r = rng.next();
                        let i = (r % KEYS as u64) as u16;
                        let now = Time::from_millis(clock.load(Ordering::Relaxed));
                        let k = key(i);
                        match table.lookup_in(&k) {
                            None if staged => {
                                // Staged, committed with up to 3 others (the same key may be
                                // staged twice before its commit: a duplicate race).
                                let d = &dests[(i % 3) as usize];
                                let nc = NewConn4 {
                                    key: ConnKeyIn4 {
                                        proto: Protocol::Tcp,
                                        caddr: v4_bits(k.caddr),
                                        cport: k.cport,
                                        vaddr: v4_bits(k.vaddr),
                                        vport: k.vport,
                                    },
                                    method: method(i),
                                    dest_addr: (v4_bits(dest_addr(i).ip()), dest_addr(i).port()),
                                    local: (0, 0),
                                    dest: d,
                                };
                                // Capacity for a few at once, some of it given back unused.
                                if pending.is_empty() && reserved.left() == 0 {
                                    table.reserve_burst(1 + (r >> 50) as u32 % 3, &mut reserved);
                                }
                                if let Ok(st) =
                                    table.stage4(&nc, TcpFlags::SYN, &LookupHint::NONE, &mut reserved, now)
                                {
                                    pending.push(st);
                                }
                                if pending.len() > (r >> 40) as usize % 4 {
                                    commit(table, &mut pending, &mut reserved, now);
                                }
                            }
                            None => {
                                let d = &dests[(i % 3) as usize];
                                if let Ok(c) = table.insert(NewConn::new(k, method(i), dest_addr(i), d), now)
                                {
                                    table.on_packet(&c, Direction::Input, TcpFlags::SYN, now);
                                }
                            }
                            Some(c) => {
                                assert_eq!(c.dest_addr(), dest_addr(i), "lookup returned another connection");
                                assert_eq!(c.client(), SocketAddr::new(k.caddr, k.cport));
                                match (r >> 32) % 16 {
                                    0 => {
                                        table.remove(&c, now);
                                    }
                                    1 => {
                                        table.on_packet(&c, Direction::Input, TcpFlags::RST, now);
                                    }
                                    2 => {
                                        table.on_packet(
                                            &c,
                                            Direction::Input,
                                            TcpFlags::FIN | TcpFlags::ACK,
                                            now,
                                        );
                                    }
                                    3..=5 if method(i) == ForwardMethod::Masq => {
                                        let out = ConnKeyOut::new(
                                            Protocol::Tcp,
                                            dest_addr(i),
                                            SocketAddr::new(k.caddr, k.cport),
                                        );
                                        if let Some(o) = table.lookup_out(&out) {
                                            assert_eq!(o.client(), SocketAddr::new(k.caddr, k.cport));
                                            table.on_packet(
                                                &o,
                                                Direction::Output,
                                                TcpFlags::SYN | TcpFlags::ACK,
                                                now,
                                            );
                                        }
                                    }
                                    _ => {
                                        table.on_packet(&c, Direction::Input, TcpFlags::ACK, now);
                                    }
                                }
                            }
                        }
                        if ops.is_multiple_of(1024) && Instant::now() > deadline {
                            break;
                        }
                    }
                    let now = Time::from_millis(clock.load(Ordering::Relaxed));
                    commit(table, &mut pending, &mut reserved, now);
                });
            }
            // Housekeeper: advances the fake clock and expires.
            let (table, clock, stop) = (&table, &clock, &stop);
            s.spawn(move || {
                while Instant::now() < deadline {
                    let now = clock.fetch_add(1000, Ordering::Relaxed) + 1000;
                    table.expire(Time::from_millis(now), 512);
                }
                stop.store(true, Ordering::Relaxed);
            });
        });

        // Quiesce: file pending entries, recycle removed ones (no time passes).
        let now = Time::from_millis(clock.load(Ordering::Relaxed));
        table.expire(now, 0);
        let listed: Vec<ConnInfo> = table.iter(now).collect();
        let ctr = table.counters();

        // No duplicate, nothing unreachable.
        let mut seen = HashSet::new();
        for e in &listed {
            assert!(seen.insert(e.client), "duplicate entry for {}", e.client);
            let i = e.client.port() - 1000;
            let c = table
                .lookup_in(&key(i))
                .expect("listed entry not found by lookup");
            assert_eq!(c.dest_addr(), dest_addr(i));
            if method(i) == ForwardMethod::Masq {
                assert!(
                    table
                        .lookup_out(&ConnKeyOut::new(Protocol::Tcp, e.dest, e.client))
                        .is_some()
                );
            }
        }
        // Counters add up.
        assert_eq!(listed.len(), table.len());
        assert_eq!(listed.len() as u64, ctr.conns);
        assert_eq!(
            ctr.inserted - ctr.removed - ctr.expired - ctr.reclaimed_synrecv,
            ctr.conns,
            "{ctr:?}"
        );
        let mut per_dest: HashMap<SocketAddr, (u32, u32)> = HashMap::new();
        for e in &listed {
            let slot = per_dest.entry(e.dest).or_default();
            if e.state == ConnState::Established {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
        for (j, d) in dests.iter().enumerate() {
            let want = per_dest.get(&dest_addr(j as u16)).copied().unwrap_or_default();
            assert_eq!((d.active_conns(), d.inactive_conns()), want, "dest {j}");
        }
        println!("{ctr:?} clock {}", clock.load(Ordering::Relaxed));
        assert!(ctr.inserted > 1000, "too little work: {ctr:?}");

        // Everything expires; every slot comes back.
        table.expire(
            Time::from_millis(clock.load(Ordering::Relaxed) + 3_600_000),
            usize::MAX,
        );
        assert_eq!(table.len(), 0);
        assert!(dests.iter().all(|d| d.total_conns() == 0));
        let t1 = Time::from_millis(clock.load(Ordering::Relaxed) + 3_700_000);
        table.expire(t1, usize::MAX);
        for n in 0..capacity {
            let k = ConnKeyIn::new(
                Protocol::Udp,
                format!("10.9.{}.{}:1", n / 250, n % 250).parse().unwrap(),
                "192.0.2.1:53".parse().unwrap(),
            );
            table
                .insert(
                    NewConn::new(k, ForwardMethod::Masq, "10.1.0.1:53".parse().unwrap(), &dests[0]),
                    t1,
                )
                .expect("slot leaked");
        }
    }

    #[test]
    fn concurrent_insert_lookup_expire_remove_keeps_table_consistent() {
        run(4096, 0x1234_5678);
    }

    #[test]
    fn concurrent_staged_inserts_with_duplicate_races_keep_table_consistent() {
        run_with(4096, 0x0bad_cafe, true);
    }

    #[test]
    fn concurrent_staged_inserts_on_a_table_smaller_than_the_key_set() {
        run_with(300, 0x5eed_f00d, true);
    }

    #[test]
    fn concurrent_churn_on_a_table_smaller_than_the_key_set() {
        // Capacity below the key count: inserts hit the full table and reclaim SYN_RECV entries.
        run(300, 0xdead_beef);
    }

    #[test]
    fn concurrent_templates_keep_persistent_counters_and_free_every_slot() {
        let capacity = 1024;
        let table = ConnTable::with_capacity(capacity);
        let dests: Vec<Destination> = (0..3)
            .map(|j| Destination::new(DestConfig::new(format!("10.1.0.{}", j + 1).parse().unwrap(), 80)))
            .collect();
        let clock = AtomicU64::new(5_000_000);
        let deadline = Instant::now() + Duration::from_millis(1200);
        let mask = PersistNetmask::V4("255.255.255.255".parse().unwrap());
        let vip: IpAddr = "192.0.2.1".parse().unwrap();
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let (table, dests, clock) = (&table, &dests, &clock);
                s.spawn(move || {
                    let mut rng = Rng(0x51ed_270b_ab3c_1d55 ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9));
                    let mut ops = 0u64;
                    while Instant::now() < deadline && ops < 2_000_000 {
                        ops += 1;
                        let r = rng.next();
                        let client = (r % 64) as u8;
                        let caddr: IpAddr = IpAddr::V4([10, 0, 0, client].into());
                        let now = Time::from_millis(clock.load(Ordering::Relaxed));
                        let tk = TemplateKey::service(Protocol::Tcp, caddr, mask, vip, 80);
                        let d = &dests[client as usize % 3];
                        let tpl = match table.lookup_template(&tk) {
                            Some(t) => t,
                            None => match table.insert_template(
                                &tk,
                                SocketAddr::new(d.config.addr, 80),
                                &d.state,
                                Duration::from_secs(2),
                                now,
                            ) {
                                Ok(t) => t,
                                Err(_) => continue,
                            },
                        };
                        match (r >> 40) % 8 {
                            0 => {
                                // Destination "removed": the template is dropped.
                                table.check_template(&tpl, None, now);
                            }
                            1 => {
                                let k = ConnKeyIn::new(
                                    Protocol::Tcp,
                                    SocketAddr::new(caddr, 2000 + (r >> 48) as u16 % 8),
                                    "192.0.2.1:80".parse().unwrap(),
                                );
                                if let Some(c) = table.lookup_in(&k) {
                                    table.remove(&c, now);
                                }
                            }
                            _ => {
                                let k = ConnKeyIn::new(
                                    Protocol::Tcp,
                                    SocketAddr::new(caddr, 2000 + (r >> 48) as u16 % 8),
                                    "192.0.2.1:80".parse().unwrap(),
                                );
                                if table.lookup_in(&k).is_none() {
                                    let mut nc =
                                        NewConn::new(k, ForwardMethod::Masq, tpl.dest_addr(), &d.state);
                                    nc.template = Some(tpl);
                                    if let Ok(c) = table.insert(nc, now) {
                                        table.on_packet(&c, Direction::Input, TcpFlags::SYN, now);
                                    }
                                }
                            }
                        }
                    }
                });
            }
            let (table, clock) = (&table, &clock);
            s.spawn(move || {
                while Instant::now() < deadline {
                    let now = clock.fetch_add(250, Ordering::Relaxed) + 250;
                    table.expire(Time::from_millis(now), 256);
                }
            });
        });
        let now = Time::from_millis(clock.load(Ordering::Relaxed));
        table.expire(now, 0);
        let listed: Vec<ConnInfo> = table.iter(now).collect();
        let ctr = table.counters();
        println!("{ctr:?}");
        assert!(ctr.templates > 0 || ctr.inserted > 1000, "{ctr:?}");
        for d in &dests {
            let tpls = listed
                .iter()
                .filter(|e| e.template && e.dest.ip() == d.config.addr)
                .count();
            let conns = listed
                .iter()
                .filter(|e| !e.template && e.dest.ip() == d.config.addr)
                .count();
            assert_eq!(d.state.persistent_conns() as usize, tpls);
            assert_eq!(d.state.total_conns() as usize, conns);
        }
        assert_eq!(listed.iter().filter(|e| e.template).count() as u64, ctr.templates);
        assert_eq!(listed.iter().filter(|e| !e.template).count() as u64, ctr.conns);
        // Everything ends; templates (also removed ones still pinned) are freed.
        let far = clock.load(Ordering::Relaxed) + 3_600_000;
        for step in 0..4 {
            table.expire(Time::from_millis(far + step * 10_000), usize::MAX);
        }
        assert_eq!(table.len(), 0);
        assert!(
            dests
                .iter()
                .all(|d| d.state.total_conns() == 0 && d.state.persistent_conns() == 0)
        );
        let t1 = Time::from_millis(far + 100_000);
        for n in 0..capacity {
            let k = ConnKeyIn::new(
                Protocol::Udp,
                format!("10.9.{}.{}:1", n / 250, n % 250).parse().unwrap(),
                "192.0.2.1:53".parse().unwrap(),
            );
            table
                .insert(
                    NewConn::new(
                        k,
                        ForwardMethod::Masq,
                        "10.1.0.1:53".parse().unwrap(),
                        &dests[0].state,
                    ),
                    t1,
                )
                .expect("slot leaked");
        }
    }
}
