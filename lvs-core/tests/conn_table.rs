//! Connection table: both-way lookup, capacity, SYN_RECV reclaim, persistence templates,
//! listing, memory per entry.

/// Named `conn` so that `cargo test -p lvs-core conn` selects these tests.
mod conn {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use lvs_core::conn::*;
    use lvs_core::{DestConfig, DestState, Destination, ForwardMethod, PersistNetmask, Protocol, Time};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(c: &str, v: &str) -> ConnKeyIn {
        ConnKeyIn::new(Protocol::Tcp, sa(c), sa(v))
    }

    const T0: Time = Time::from_secs(1000);

    #[test]
    fn table_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ConnTable>();
        check::<Arc<ConnTable>>();
    }

    #[test]
    fn nat_entry_is_found_from_both_sides() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let k = key("198.51.100.7:40001", "192.0.2.1:80");
        t.insert(NewConn::new(k, ForwardMethod::Masq, sa("10.1.0.5:8080"), &d), T0)
            .unwrap();
        let c = t.lookup_in(&k).unwrap();
        assert_eq!(c.dest_addr(), sa("10.1.0.5:8080"));
        assert_eq!(c.method(), ForwardMethod::Masq);
        // The reply: RIP:rport → CIP:cport.
        let r = t
            .lookup_out(&ConnKeyOut::new(
                Protocol::Tcp,
                sa("10.1.0.5:8080"),
                sa("198.51.100.7:40001"),
            ))
            .unwrap();
        assert_eq!(r, c);
        assert_eq!(r.client(), sa("198.51.100.7:40001"));
        assert_eq!(r.virt(), sa("192.0.2.1:80"));
        // Near misses miss.
        assert!(t.lookup_in(&key("198.51.100.7:40002", "192.0.2.1:80")).is_none());
        assert!(t.lookup_in(&key("198.51.100.7:40001", "192.0.2.1:81")).is_none());
        assert!(
            t.lookup_in(&ConnKeyIn::new(
                Protocol::Udp,
                sa("198.51.100.7:40001"),
                sa("192.0.2.1:80")
            ))
            .is_none()
        );
        assert!(
            t.lookup_out(&ConnKeyOut::new(
                Protocol::Tcp,
                sa("10.1.0.5:8081"),
                sa("198.51.100.7:40001")
            ))
            .is_none()
        );
    }

    #[test]
    fn fullnat_reply_is_found_by_local_address() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let k = key("198.51.100.7:40001", "192.0.2.1:80");
        let mut nc = NewConn::new(k, ForwardMethod::FullNat, sa("10.1.0.5:80"), &d);
        nc.local = Some(sa("10.9.0.1:61000"));
        t.insert(nc, T0).unwrap();
        let r = t
            .lookup_out(&ConnKeyOut::new(
                Protocol::Tcp,
                sa("10.1.0.5:80"),
                sa("10.9.0.1:61000"),
            ))
            .unwrap();
        assert_eq!(r.client(), sa("198.51.100.7:40001"));
        assert_eq!(r.local(), Some(sa("10.9.0.1:61000")));
        // Not under the client address: the server never sees it.
        assert!(
            t.lookup_out(&ConnKeyOut::new(
                Protocol::Tcp,
                sa("10.1.0.5:80"),
                sa("198.51.100.7:40001")
            ))
            .is_none()
        );
    }

    #[test]
    fn insert_hands_back_what_lookups_find_for_every_method_and_protocol() {
        let t = ConnTable::with_capacity(64);
        let d = Arc::new(DestState::new(0, 0));
        let methods = [
            ForwardMethod::Masq,
            ForwardMethod::DirectRoute,
            ForwardMethod::Tunnel,
            ForwardMethod::FullNat,
        ];
        let protos = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
        let mut cport = 41000;
        let mut active = 0;
        for m in methods {
            for p in protos {
                cport += 1;
                let client = SocketAddr::new("198.51.100.7".parse().unwrap(), cport);
                let k = ConnKeyIn::new(p, client, sa("192.0.2.1:80"));
                let mut nc = NewConn::new(k, m, sa("10.1.0.5:8080"), &d);
                if m == ForwardMethod::FullNat {
                    nc.local = Some(SocketAddr::new("10.9.0.1".parse().unwrap(), cport + 1000));
                }
                let local = nc.local;
                let h = t.insert(nc, T0).unwrap();
                // The first state: TCP NONE, UDP its one state, SCTP ESTABLISHED (counted active).
                let first = match p {
                    Protocol::Tcp => ConnState::None,
                    Protocol::Udp => ConnState::Udp,
                    Protocol::Sctp => ConnState::Established,
                };
                assert_eq!(h.state(), first, "{m:?} {p:?}");
                if first == ConnState::Established {
                    active += 1;
                }
                assert_eq!((h.method(), h.proto()), (m, p));
                assert_eq!(h.client(), client);
                assert_eq!(h.virt(), sa("192.0.2.1:80"));
                assert_eq!(h.dest_addr(), sa("10.1.0.5:8080"));
                assert_eq!(h.local(), local);
                assert_eq!(h.dest_id(), d.id());
                // The same handle from the client side, plain and hinted.
                assert_eq!(t.lookup_in(&k), Some(h), "{m:?} {p:?}");
                let mut hint = [LookupHint::NONE; 1];
                t.prefetch_in_hinted(&[k], &mut hint);
                assert_eq!(t.lookup_in_hinted(&k, &hint[0]), Some(h));
                // From the server side for NAT (to the client) and FULLNAT (to the local
                // address) only.
                let to = local.unwrap_or(client);
                let r = ConnKeyOut::new(p, sa("10.1.0.5:8080"), to);
                let mut hint = [LookupHint::NONE; 1];
                t.prefetch_out_hinted(&[r], &mut hint);
                let expect = matches!(m, ForwardMethod::Masq | ForwardMethod::FullNat).then_some(h);
                assert_eq!(t.lookup_out(&r), expect, "{m:?} {p:?}");
                assert_eq!(t.lookup_out_hinted(&r, &hint[0]), expect);
            }
        }
        assert_eq!(t.len(), 12);
        assert_eq!(d.active_conns(), active);
        assert_eq!(d.inactive_conns(), 12 - active);
    }

    #[test]
    fn direct_routing_entry_has_no_server_side_key() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let k = key("198.51.100.7:40001", "192.0.2.1:80");
        t.insert(
            NewConn::new(k, ForwardMethod::DirectRoute, sa("10.1.0.5:80"), &d),
            T0,
        )
        .unwrap();
        assert!(t.lookup_in(&k).is_some());
        assert!(
            t.lookup_out(&ConnKeyOut::new(
                Protocol::Tcp,
                sa("10.1.0.5:80"),
                sa("198.51.100.7:40001")
            ))
            .is_none()
        );
    }

    #[test]
    fn ipv6_entries_are_found_and_distinct_from_ipv4_mapped() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let k6 = key("[2001:db8::7]:40001", "[2001:db8::1]:443");
        t.insert(NewConn::new(k6, ForwardMethod::Masq, sa("[fd00::5]:443"), &d), T0)
            .unwrap();
        assert!(t.lookup_in(&k6).is_some());
        assert!(
            t.lookup_out(&ConnKeyOut::new(
                Protocol::Tcp,
                sa("[fd00::5]:443"),
                sa("[2001:db8::7]:40001")
            ))
            .is_some()
        );
        let k4 = key("1.2.3.4:5", "5.6.7.8:80");
        let mapped = key("[::ffff:1.2.3.4]:5", "[::ffff:5.6.7.8]:80");
        t.insert(NewConn::new(k4, ForwardMethod::Masq, sa("10.0.0.1:80"), &d), T0)
            .unwrap();
        assert!(t.lookup_in(&mapped).is_none());
    }

    #[test]
    fn removed_connection_is_gone_and_its_handle_is_stale_after_recycling() {
        let t = ConnTable::with_capacity(1);
        let d = Arc::new(DestState::new(0, 0));
        let k = key("10.0.0.1:1", "192.0.2.1:80");
        let c = t
            .insert(NewConn::new(k, ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
            .unwrap();
        assert!(t.remove(&c, T0));
        assert!(!t.remove(&c, T0));
        assert!(t.lookup_in(&k).is_none());
        assert_eq!(d.total_conns(), 0);
        t.expire(T0, 10);
        // Reuse every slot a few times with other keys; the old handle never matches.
        for i in 0..600u16 {
            let k2 = key(&format!("10.0.0.2:{i}"), "192.0.2.1:80");
            let c2 = t
                .insert(NewConn::new(k2, ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
                .unwrap();
            assert_eq!(t.on_packet(&c, Direction::Input, TcpFlags::SYN, T0), None);
            assert!(t.dest_of(&c).is_none());
            assert!(t.remove(&c2, T0));
            t.expire(T0, 10);
        }
    }

    #[test]
    fn full_table_refuses_new_connections_and_keeps_established_ones() {
        let cap = 100;
        let t = ConnTable::with_capacity(cap);
        let d = Arc::new(DestState::new(0, 0));
        let mut conns = Vec::new();
        for i in 0..cap as u16 {
            let c = t
                .insert(
                    NewConn::new(
                        key(&format!("10.0.0.1:{i}"), "192.0.2.1:80"),
                        ForwardMethod::Masq,
                        sa("10.1.0.5:80"),
                        &d,
                    ),
                    T0,
                )
                .unwrap();
            t.on_packet(&c, Direction::Input, TcpFlags::SYN, T0);
            t.on_packet(&c, Direction::Output, TcpFlags::SYN | TcpFlags::ACK, T0);
            t.on_packet(&c, Direction::Input, TcpFlags::ACK, T0);
            conns.push(c);
        }
        assert_eq!(t.len(), cap);
        for i in 0..10u16 {
            let r = t.insert(
                NewConn::new(
                    key(&format!("10.0.0.2:{i}"), "192.0.2.1:80"),
                    ForwardMethod::Masq,
                    sa("10.1.0.5:80"),
                    &d,
                ),
                T0,
            );
            assert_eq!(r, Err(TableFull));
        }
        assert_eq!(t.counters().refused_full, 10);
        assert_eq!(t.counters().reclaimed_synrecv, 0);
        assert_eq!(d.active_conns(), cap as u32);
        for i in 0..cap as u16 {
            assert!(
                t.lookup_in(&key(&format!("10.0.0.1:{i}"), "192.0.2.1:80"))
                    .is_some()
            );
        }
        // Room again after one leaves.
        assert!(t.remove(&conns[0], T0));
        t.expire(T0, 10);
        assert!(
            t.insert(
                NewConn::new(
                    key("10.0.0.3:1", "192.0.2.1:80"),
                    ForwardMethod::Masq,
                    sa("10.1.0.5:80"),
                    &d
                ),
                T0
            )
            .is_ok()
        );
    }

    #[test]
    fn syn_flood_reclaims_syn_recv_entries_first() {
        let cap = 200;
        let t = ConnTable::with_capacity(cap);
        let d = Arc::new(DestState::new(0, 0));
        // Half established, half half-open (SYN_RECV).
        for i in 0..cap as u16 {
            let c = t
                .insert(
                    NewConn::new(
                        key(&format!("10.0.0.1:{i}"), "192.0.2.1:80"),
                        ForwardMethod::Masq,
                        sa("10.1.0.5:80"),
                        &d,
                    ),
                    T0,
                )
                .unwrap();
            t.on_packet(&c, Direction::Input, TcpFlags::SYN, T0);
            if i % 2 == 0 {
                t.on_packet(&c, Direction::Input, TcpFlags::ACK, T0);
            }
        }
        t.expire(T0, 1000);
        // Flood: 100 new SYNs, housekeeping between bursts of 10.
        let mut accepted = 0;
        for i in 0..100u16 {
            let r = t.insert(
                NewConn::new(
                    key(&format!("10.0.0.9:{i}"), "192.0.2.1:80"),
                    ForwardMethod::Masq,
                    sa("10.1.0.5:80"),
                    &d,
                ),
                T0,
            );
            if let Ok(c) = r {
                t.on_packet(&c, Direction::Input, TcpFlags::SYN, T0);
                accepted += 1;
            }
            if i % 10 == 9 {
                t.expire(T0, 1000);
            }
        }
        let ctr = t.counters();
        assert!(accepted >= 90, "accepted only {accepted}");
        assert_eq!(ctr.reclaimed_synrecv, accepted);
        assert_eq!(ctr.refused_full, 100 - accepted);
        // Every established connection survived.
        for i in (0..cap as u16).step_by(2) {
            let c = t
                .lookup_in(&key(&format!("10.0.0.1:{i}"), "192.0.2.1:80"))
                .unwrap();
            assert_eq!(c.state(), ConnState::Established);
        }
        assert_eq!(d.active_conns(), 100);
        assert_eq!(d.inactive_conns(), 100);
        assert_eq!(t.len(), cap);
    }

    fn dest(addr: &str, weight: u32) -> Destination {
        let s = sa(addr);
        Destination::new(DestConfig {
            weight,
            method: ForwardMethod::Masq,
            ..DestConfig::new(s.ip(), s.port())
        })
    }

    #[test]
    fn persistence_template_pins_client_while_conns_live_and_timeout_after() {
        let t = ConnTable::with_capacity(64);
        let rs = dest("10.1.0.5:80", 1);
        let mask = PersistNetmask::V4("255.255.255.255".parse().unwrap());
        let cip = "198.51.100.7".parse().unwrap();
        let vip = "192.0.2.1".parse().unwrap();
        let tk = TemplateKey::service(Protocol::Tcp, cip, mask, vip, 80);
        assert!(t.lookup_template(&tk).is_none());
        let tpl = t
            .insert_template(&tk, sa("10.1.0.5:80"), &rs.state, Duration::from_secs(300), T0)
            .unwrap();
        assert_eq!(rs.state.persistent_conns(), 1);
        // A connection through it.
        let mut nc = NewConn::new(
            key("198.51.100.7:5000", "192.0.2.1:80"),
            ForwardMethod::Masq,
            sa("10.1.0.5:80"),
            &rs.state,
        );
        nc.template = Some(tpl);
        let c = t.insert(nc, T0).unwrap();
        t.on_packet(&c, Direction::Input, TcpFlags::SYN, T0);
        t.on_packet(&c, Direction::Input, TcpFlags::ACK, T0);
        assert_eq!(t.template_conns(&tpl), 1);
        // The same client on another port finds the template and its destination.
        let found = t.lookup_template(&tk).unwrap();
        assert_eq!(found.dest_addr(), sa("10.1.0.5:80"));
        assert!(t.check_template(&found, Some(&rs), T0));
        // The connection stays established (refreshed) for an hour: the template outlives its
        // own 300 s because it controls a connection.
        let mut now = 1000;
        while now < 1000 + 3600 {
            t.on_packet(&c, Direction::Input, TcpFlags::ACK, Time::from_secs(now));
            t.expire(Time::from_secs(now), 1000);
            now += 60;
        }
        assert!(t.lookup_template(&tk).is_some());
        // The connection ends (RST → CLOSE, 10 s); the template lives 300 s after that.
        let end = now;
        t.on_packet(&c, Direction::Input, TcpFlags::RST, Time::from_secs(end));
        t.expire(Time::from_secs(end + 11), 1000);
        assert!(t.lookup_in(&key("198.51.100.7:5000", "192.0.2.1:80")).is_none());
        assert_eq!(t.template_conns(&tpl), 0);
        t.expire(Time::from_secs(end + 11 + 299), 1000);
        assert!(
            t.lookup_template(&tk).is_some(),
            "template must live timeout after its last conn"
        );
        t.expire(Time::from_secs(end + 11 + 301), 1000);
        assert!(t.lookup_template(&tk).is_none());
        assert_eq!(rs.state.persistent_conns(), 0);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn persistence_netmask_groups_clients_of_one_subnet() {
        let t = ConnTable::with_capacity(64);
        let rs = dest("10.1.0.5:80", 1);
        let m24 = PersistNetmask::V4("255.255.255.0".parse().unwrap());
        let vip = "192.0.2.1".parse().unwrap();
        let a = TemplateKey::service(Protocol::Tcp, "198.51.100.7".parse().unwrap(), m24, vip, 80);
        let b = TemplateKey::service(Protocol::Tcp, "198.51.100.200".parse().unwrap(), m24, vip, 80);
        let other = TemplateKey::service(Protocol::Tcp, "198.51.101.7".parse().unwrap(), m24, vip, 80);
        t.insert_template(&a, sa("10.1.0.5:80"), &rs.state, Duration::from_secs(60), T0)
            .unwrap();
        assert_eq!(a, b);
        assert!(t.lookup_template(&b).is_some());
        assert!(t.lookup_template(&other).is_none());
        // Without netmask (/32), neighbours are separate.
        let m32 = PersistNetmask::V4("255.255.255.255".parse().unwrap());
        let a32 = TemplateKey::service(Protocol::Tcp, "198.51.100.7".parse().unwrap(), m32, vip, 80);
        let b32 = TemplateKey::service(Protocol::Tcp, "198.51.100.200".parse().unwrap(), m32, vip, 80);
        t.insert_template(&a32, sa("10.1.0.5:80"), &rs.state, Duration::from_secs(60), T0)
            .unwrap();
        assert!(t.lookup_template(&a32).is_some());
        assert!(t.lookup_template(&b32).is_none());
        // IPv6 prefix length.
        let v6 = TemplateKey::service(
            Protocol::Tcp,
            "2001:db8:1:2::7".parse().unwrap(),
            PersistNetmask::V6(64),
            "2001:db8::1".parse().unwrap(),
            443,
        );
        t.insert_template(&v6, sa("[fd00::5]:443"), &rs.state, Duration::from_secs(60), T0)
            .unwrap();
        let v6b = TemplateKey::service(
            Protocol::Tcp,
            "2001:db8:1:2::99".parse().unwrap(),
            PersistNetmask::V6(64),
            "2001:db8::1".parse().unwrap(),
            443,
        );
        assert!(t.lookup_template(&v6b).is_some());
        // Templates are not connections.
        assert!(t.lookup_in(&key("198.51.100.7:0", "192.0.2.1:80")).is_none());
        assert_eq!(t.counters().templates, 3);
        assert_eq!(t.counters().conns, 0);
    }

    #[test]
    fn fwmark_template_is_keyed_by_mark_with_port_zero() {
        let t = ConnTable::with_capacity(16);
        let rs = dest("10.1.0.5:0", 1);
        let m = PersistNetmask::V4("255.255.255.255".parse().unwrap());
        let k = TemplateKey::fwmark(10, "198.51.100.7".parse().unwrap(), m);
        t.insert_template(&k, sa("10.1.0.5:0"), &rs.state, Duration::from_secs(900), T0)
            .unwrap();
        assert!(
            t.lookup_template(&TemplateKey::fwmark(10, "198.51.100.7".parse().unwrap(), m))
                .is_some()
        );
        assert!(
            t.lookup_template(&TemplateKey::fwmark(11, "198.51.100.7".parse().unwrap(), m))
                .is_none()
        );
        let rows: Vec<ConnInfo> = t.iter(T0).collect();
        // As the kernel lists it: "IP 15:00 NONE 198.51.100.7:0 0.0.0.10:0 10.1.0.5:0".
        assert_eq!(
            listing_row(&rows[0]),
            format!(
                "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
                "IP", "15:00", "NONE", "198.51.100.7:0", "0.0.0.10:0", "10.1.0.5:0"
            )
        );
    }

    #[test]
    fn template_dropped_when_destination_removed_kept_on_weight_zero_unless_expire_quiescent() {
        let t = ConnTable::with_capacity(16);
        let rs = dest("10.1.0.5:80", 1);
        let m = PersistNetmask::V4("255.255.255.255".parse().unwrap());
        let vip = "192.0.2.1".parse().unwrap();
        let k = TemplateKey::service(Protocol::Tcp, "198.51.100.7".parse().unwrap(), m, vip, 80);
        let tpl = t
            .insert_template(&k, sa("10.1.0.5:80"), &rs.state, Duration::from_secs(60), T0)
            .unwrap();
        // Weight 0 (quiesced): still used.
        let quiesced = Destination {
            config: DestConfig {
                weight: 0,
                ..rs.config.clone()
            },
            state: Arc::clone(&rs.state),
        };
        assert!(t.check_template(&tpl, Some(&quiesced), T0));
        assert!(t.lookup_template(&k).is_some());
        // With expire_quiescent_template: dropped.
        t.set_expire_quiescent_template(true);
        assert!(!t.check_template(&tpl, Some(&quiesced), T0));
        assert!(t.lookup_template(&k).is_none());
        assert_eq!(rs.state.persistent_conns(), 0);
        // Destination removed from the service: dropped.
        t.set_expire_quiescent_template(false);
        let tpl = t
            .insert_template(&k, sa("10.1.0.5:80"), &rs.state, Duration::from_secs(60), T0)
            .unwrap();
        assert!(!t.check_template(&tpl, None, T0));
        assert!(t.lookup_template(&k).is_none());
        // A different destination (same address re-added with fresh state) does not match.
        let tpl = t
            .insert_template(&k, sa("10.1.0.5:80"), &rs.state, Duration::from_secs(60), T0)
            .unwrap();
        let readded = dest("10.1.0.5:80", 1);
        assert!(!t.check_template(&tpl, Some(&readded), T0));
    }

    #[test]
    fn listing_matches_ipvsadm_columns() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let c = t
            .insert(
                NewConn::new(
                    key("192.168.56.1:56954", "192.168.56.200:80"),
                    ForwardMethod::DirectRoute,
                    sa("192.168.56.102:80"),
                    &d,
                ),
                T0,
            )
            .unwrap();
        t.on_packet(&c, Direction::Input, TcpFlags::SYN, T0);
        t.on_packet(&c, Direction::Input, TcpFlags::ACK, T0);
        // 9 seconds later: 900 - 9 = 891 s = 14:51.
        let rows: Vec<ConnInfo> = t.iter(Time::from_secs(1009)).collect();
        let text = listing(&rows, false);
        assert_eq!(
            text,
            "IPVS connection entries\n\
         pro expire state       source             virtual            destination\n\
         TCP 14:51  ESTABLISHED 192.168.56.1:56954 192.168.56.200:80  192.168.56.102:80\n"
        );
        let p = listing_header(true);
        assert_eq!(
            p,
            "IPVS connection entries\n\
         pro expire state       source             virtual            destination        pe name          pe_data\n"
        );
        // IPv6 in brackets; long fields push the next column, as printf does.
        let k6 = key("[2001:db8::7]:40001", "[2001:db8::1]:443");
        t.insert(NewConn::new(k6, ForwardMethod::Masq, sa("[fd00::5]:443"), &d), T0)
            .unwrap();
        let rows: Vec<ConnInfo> = t.iter(T0).filter(|r| r.client.is_ipv6()).collect();
        assert_eq!(
            listing_row(&rows[0]),
            "TCP 00:02  NONE        [2001:db8::7]:40001 [2001:db8::1]:443  [fd00::5]:443\n"
        );
    }

    #[test]
    fn bytes_per_entry_is_stated() {
        let t = ConnTable::with_capacity(1 << 20);
        let per = t.bytes_per_entry();
        let per6 = t.bytes_per_entry_v6();
        println!(
            "IPv4 entry {} B (one cache line), 1M-entry table: {:.1} B per entry incl. arena slack, \
             both indexes, wheel links; IPv6 entry {} B: {:.1} B per entry",
            ENTRY_BYTES, per, ENTRY_BYTES_V6, per6
        );
        assert_eq!(ENTRY_BYTES, 64);
        assert_eq!(ENTRY_BYTES_V6, 128);
        // The goal: at most 96 bytes per IPv4 entry including both index slots.
        assert!(per <= 96.0, "{per}");
        assert!(per6 < 170.0, "{per6}");
    }

    #[test]
    fn batched_lookup_agrees_with_single_lookups() {
        let t = ConnTable::with_capacity(2048);
        let d = Arc::new(DestState::new(0, 0));
        for i in 0..1000u16 {
            let k = key(
                &format!("10.0.{}.{}:{}", i % 7, i % 250, 2000 + i),
                "192.0.2.1:80",
            );
            t.insert(NewConn::new(k, ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
                .unwrap();
        }
        // Hits, misses and removed entries, 37 keys (not a multiple of the burst size).
        let mut keys = Vec::new();
        for i in (0..1100u16).step_by(30) {
            keys.push(key(
                &format!("10.0.{}.{}:{}", i % 7, i % 250, 2000 + i),
                "192.0.2.1:80",
            ));
        }
        let gone = t.lookup_in(&keys[3]).unwrap();
        t.remove(&gone, T0);
        // IPv6 keys mixed in: one present, one absent.
        let k6 = key("[2001:db8::9]:4000", "[2001:db8::1]:80");
        t.insert(NewConn::new(k6, ForwardMethod::Masq, sa("[fd00::5]:80"), &d), T0)
            .unwrap();
        keys.insert(5, k6);
        keys.insert(9, key("[2001:db8::9]:4001", "[2001:db8::1]:80"));
        let mut out = vec![None; keys.len()];
        t.lookup_in_batch(&keys, &mut out);
        let single: Vec<Option<ConnRef>> = keys.iter().map(|k| t.lookup_in(k)).collect();
        assert_eq!(out, single);
        assert!(out[3].is_none());
        assert_eq!(out[5].map(|c| c.client()), Some(sa("[2001:db8::9]:4000")));
        assert!(out[9].is_none());
        assert_eq!(out.iter().filter(|o| o.is_some()).count(), 34);
    }

    /// Lines asked for by [`counting_prefetch`] (used by one test only).
    static PREFETCHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn counting_prefetch(p: *const u8) {
        assert!(!p.is_null());
        PREFETCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn a_registered_prefetch_serves_the_burst_stages_and_changes_no_result() {
        let t = ConnTable::with_capacity(2048);
        assert!(t.set_prefetch(counting_prefetch));
        assert!(
            !t.set_prefetch(counting_prefetch),
            "only the first registration counts"
        );
        let d = Arc::new(DestState::new(0, 0));
        let k = |i: u16| {
            key(
                &format!("10.0.{}.{}:{}", i % 7, i % 250, 2000 + i),
                "192.0.2.1:80",
            )
        };
        for i in 0..1000u16 {
            t.insert(NewConn::new(k(i), ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
                .unwrap();
        }
        // 60 hits, 20 misses, one removed entry, IPv6 present and absent.
        let mut keys: Vec<ConnKeyIn> = (0..1080u16)
            .step_by(13)
            .collect::<Vec<_>>()
            .into_iter()
            .map(k)
            .collect();
        t.remove(&t.lookup_in(&keys[4]).unwrap(), T0);
        let k6 = key("[2001:db8::9]:4000", "[2001:db8::1]:80");
        t.insert(NewConn::new(k6, ForwardMethod::Masq, sa("[fd00::5]:80"), &d), T0)
            .unwrap();
        keys.insert(7, k6);
        keys.insert(30, key("[2001:db8::9]:4001", "[2001:db8::1]:80"));
        let single: Vec<Option<ConnRef>> = keys.iter().map(|k| t.lookup_in(k)).collect();
        let v4_hits = single
            .iter()
            .filter(|c| c.is_some_and(|c| c.client().is_ipv4()))
            .count();
        assert_eq!(v4_hits, 76);

        let before = PREFETCHED.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = vec![None; keys.len()];
        t.lookup_in_batch(&keys, &mut out);
        assert_eq!(out, single);
        // A home bucket for each key, then the line of each IPv4 hit's entry and both lines
        // of the IPv6 hit's.
        let asked = PREFETCHED.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(asked >= keys.len() + v4_hits + 2, "{asked}");

        let before = PREFETCHED.load(std::sync::atomic::Ordering::Relaxed);
        let mut hints = [LookupHint::NONE; PREFETCH_BURST];
        t.prefetch_in_hinted(&keys, &mut hints);
        let asked = PREFETCHED.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(asked >= PREFETCH_BURST + 30, "{asked}");
        for (k, h) in keys.iter().zip(&hints) {
            assert_eq!(t.lookup_in_hinted(k, h), t.lookup_in(k), "key {k:?}");
        }
    }

    #[test]
    fn hinted_lookups_see_changes_made_after_the_prefetch() {
        let t = ConnTable::with_capacity(256);
        let d = Arc::new(DestState::new(0, 0));
        let vip = "192.0.2.1:80";
        let k = |i: u16| key(&format!("10.0.0.{}:{}", 1 + i % 200, 3000 + i), vip);
        for i in 0..20 {
            t.insert(NewConn::new(k(i), ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
                .unwrap();
        }
        let k6 = key("[2001:db8::9]:4000", "[2001:db8::1]:80");
        t.insert(NewConn::new(k6, ForwardMethod::Masq, sa("[fd00::5]:80"), &d), T0)
            .unwrap();
        // Present (0..20), absent (20..24), IPv6 present and absent.
        let mut keys: Vec<ConnKeyIn> = (0..24).map(k).collect();
        keys.push(k6);
        keys.push(key("[2001:db8::9]:4001", "[2001:db8::1]:80"));
        let mut hints = [LookupHint::NONE; PREFETCH_BURST];
        t.prefetch_in_hinted(&keys, &mut hints);
        // Between prefetch and lookups: one entry removed, one re-inserted elsewhere (a
        // new generation in another slot), one absent key inserted, as earlier packets of
        // the same burst or other workers may do.
        t.remove(&t.lookup_in(&keys[2]).unwrap(), T0);
        t.remove(&t.lookup_in(&keys[5]).unwrap(), T0);
        t.insert(
            NewConn::new(keys[5], ForwardMethod::Masq, sa("10.1.0.9:80"), &d),
            T0,
        )
        .unwrap();
        t.insert(
            NewConn::new(keys[21], ForwardMethod::Masq, sa("10.1.0.7:80"), &d),
            T0,
        )
        .unwrap();
        for (k, h) in keys.iter().zip(&hints) {
            assert_eq!(t.lookup_in_hinted(k, h), t.lookup_in(k), "key {k:?}");
            assert_eq!(t.lookup_in_hinted(k, &LookupHint::NONE), t.lookup_in(k));
        }
        assert!(t.lookup_in_hinted(&keys[2], &hints[2]).is_none());
        assert_eq!(
            t.lookup_in_hinted(&keys[5], &hints[5]).map(|c| c.dest_addr()),
            Some(sa("10.1.0.9:80"))
        );
        assert_eq!(
            t.lookup_in_hinted(&keys[21], &hints[21]).map(|c| c.dest_addr()),
            Some(sa("10.1.0.7:80"))
        );
        assert!(t.lookup_in_hinted(&keys[22], &hints[22]).is_none());
        assert_eq!(
            t.lookup_in_hinted(&keys[24], &hints[24]).map(|c| c.client()),
            Some(sa("[2001:db8::9]:4000"))
        );
        assert!(t.lookup_in_hinted(&keys[25], &hints[25]).is_none());

        // The reply side: RIP:rport → CIP:cport.
        let out = |c: &ConnKeyIn, rip: &str| {
            ConnKeyOut::new(Protocol::Tcp, sa(rip), SocketAddr::new(c.caddr, c.cport))
        };
        let okeys = [
            out(&keys[0], "10.1.0.5:80"),
            out(&keys[5], "10.1.0.9:80"),
            out(&keys[1], "10.1.0.6:80"),
            out(&keys[7], "10.1.0.5:80"),
        ];
        let mut ohints = [LookupHint::NONE; 4];
        t.prefetch_out_hinted(&okeys, &mut ohints);
        t.remove(&t.lookup_in(&keys[7]).unwrap(), T0);
        for (k, h) in okeys.iter().zip(&ohints) {
            assert_eq!(t.lookup_out_hinted(k, h), t.lookup_out(k), "key {k:?}");
        }
        assert_eq!(t.lookup_out_hinted(&okeys[0], &ohints[0]), t.lookup_in(&keys[0]));
        assert!(t.lookup_out_hinted(&okeys[1], &ohints[1]).is_some());
        assert!(t.lookup_out_hinted(&okeys[2], &ohints[2]).is_none());
        assert!(t.lookup_out_hinted(&okeys[3], &ohints[3]).is_none());
    }

    #[test]
    fn inserts_recycle_removed_slots_themselves_when_housekeeping_is_late() {
        let t = ConnTable::with_capacity(10);
        let d = Arc::new(DestState::new(0, 0));
        t.expire(T0, 10);
        // Far more insert/remove pairs than the arena has spare slots, no housekeeping.
        for i in 0..2000u32 {
            let k = key(
                &format!("10.0.{}.{}:{}", i / 250, i % 250, 1000 + i % 7),
                "192.0.2.1:80",
            );
            let c = t
                .insert(NewConn::new(k, ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
                .expect("removed slots must be reusable");
            assert!(t.remove(&c, T0));
        }
        assert_eq!(t.counters().refused_full, 0);
        assert_eq!(t.len(), 0);
        assert_eq!(d.total_conns(), 0);
    }

    #[test]
    fn both_families_share_the_capacity_and_ipv6_slots_span_segments() {
        let cap = 6000;
        let t = ConnTable::with_capacity(cap);
        let d = Arc::new(DestState::new(0, 0));
        let k4 = |i: u32| {
            key(
                &format!("10.0.{}.{}:{}", i / 250, i % 250, 1000 + i % 7),
                "192.0.2.1:80",
            )
        };
        let k6 = |i: u32| {
            key(
                &format!("[2001:db8::{:x}]:{}", i + 1, 2000 + i % 5),
                "[2001:db8::1]:443",
            )
        };
        let mut conns = Vec::new();
        for i in 0..1000 {
            conns.push(
                t.insert(
                    NewConn::new(k4(i), ForwardMethod::Masq, sa("10.1.0.5:80"), &d),
                    T0,
                )
                .unwrap(),
            );
        }
        // More than one 4096-slot segment of the IPv6 arena.
        for i in 0..5000 {
            let c = t
                .insert(
                    NewConn::new(k6(i), ForwardMethod::Masq, sa("[fd00::5]:443"), &d),
                    T0,
                )
                .unwrap();
            assert_eq!(
                c.client(),
                sa(&format!("[2001:db8::{:x}]:{}", i + 1, 2000 + i % 5))
            );
            conns.push(c);
        }
        assert_eq!(t.len(), cap);
        assert_eq!(d.total_conns(), cap as u32);
        // Full: neither family gets in (and nothing established is evicted).
        let extra4 = NewConn::new(k4(5000), ForwardMethod::Masq, sa("10.1.0.5:80"), &d);
        assert_eq!(t.insert(extra4, T0).unwrap_err(), TableFull);
        let extra6 = NewConn::new(k6(6000), ForwardMethod::Masq, sa("[fd00::5]:443"), &d);
        assert_eq!(t.insert(extra6, T0).unwrap_err(), TableFull);
        // Both sides find every entry of both families.
        for (i, c) in conns.iter().enumerate() {
            let k = if i < 1000 {
                k4(i as u32)
            } else {
                k6(i as u32 - 1000)
            };
            assert_eq!(t.lookup_in(&k), Some(*c));
            let back = ConnKeyOut::new(Protocol::Tcp, c.dest_addr(), c.client());
            assert_eq!(
                t.lookup_out(&back).map(|r| (r.client(), r.virt())),
                Some((c.client(), c.virt()))
            );
        }
        assert_eq!(t.iter(T0).filter(|r| r.client.is_ipv6()).count(), 5000);
        // Removing IPv6 connections makes room for IPv4 ones and vice versa.
        for c in &conns[1000..1100] {
            assert!(t.remove(c, T0));
        }
        t.expire(T0, 1000);
        for i in 0..100 {
            t.insert(
                NewConn::new(k4(2000 + i), ForwardMethod::Masq, sa("10.1.0.5:80"), &d),
                T0,
            )
            .unwrap();
        }
        assert_eq!(t.len(), cap);
        assert!(t.lookup_in(&k6(5)).is_none());
        assert!(t.lookup_in(&k6(500)).is_some());
    }

    #[test]
    fn the_table_holds_a_destination_only_while_entries_reference_it() {
        let t = ConnTable::with_capacity(64);
        t.expire(T0, 10);
        let d = Arc::new(DestState::new(0, 0));
        let k = key("10.0.0.1:1000", "192.0.2.1:80");
        let c = t
            .insert(NewConn::new(k, ForwardMethod::Masq, sa("10.1.0.5:80"), &d), T0)
            .unwrap();
        let tk = TemplateKey::service(
            Protocol::Tcp,
            sa("10.0.0.1:0").ip(),
            PersistNetmask::V4("255.255.255.255".parse().unwrap()),
            sa("192.0.2.1:0").ip(),
            80,
        );
        let tpl = t
            .insert_template(&tk, sa("10.1.0.5:80"), &d, Duration::from_secs(60), T0)
            .unwrap();
        assert!(Arc::strong_count(&d) > 1);
        assert!(Arc::ptr_eq(&t.dest_of(&c).unwrap(), &d));
        assert!(Arc::ptr_eq(&t.template_dest(&tpl).unwrap(), &d));
        assert!(t.remove(&c, T0));
        assert!(t.dest_of(&c).is_none());
        // The template still references it.
        assert!(Arc::ptr_eq(&t.template_dest(&tpl).unwrap(), &d));
        t.expire(Time::from_secs(2000), 1000);
        assert!(t.template_dest(&tpl).is_none());
        assert_eq!(Arc::strong_count(&d), 1, "the table let go of the destination");
        assert_eq!(d.persistent_conns(), 0);
    }
}
