//! TCP state machine, timeouts and destination counters of the connection table.

/// Named `conn` so that `cargo test -p lvs-core conn` selects these tests.
mod conn {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use lvs_core::conn::*;
    use lvs_core::{DestState, ForwardMethod, Protocol, Time};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const FLAGS: [(&str, TcpFlags); 4] = [
        ("syn", TcpFlags::SYN),
        ("fin", TcpFlags::FIN),
        ("ack", TcpFlags::ACK),
        ("rst", TcpFlags::RST),
    ];

    fn st(abbr: &str) -> ConnState {
        match abbr {
            "sNO" => ConnState::None,
            "sES" => ConnState::Established,
            "sSS" => ConnState::SynSent,
            "sSR" => ConnState::SynRecv,
            "sFW" => ConnState::FinWait,
            "sTW" => ConnState::TimeWait,
            "sCL" => ConnState::Close,
            "sCW" => ConnState::CloseWait,
            "sLA" => ConnState::LastAck,
            "sLI" => ConnState::Listen,
            "sSA" => ConnState::SynAck,
            other => panic!("bad state {other}"),
        }
    }

    /// The kernel's `tcp_states` as printed in ip_vs_proto_tcp.c (INPUT, OUTPUT, INPUT-ONLY;
    /// rows syn, fin, ack, rst; columns sNO sES sSS sSR sFW sTW sCL sCW sLA sLI sSA).
    const KERNEL_TABLE: &str = "
sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
sCL sCW sSS sTW sTW sTW sCL sCW sLA sLI sTW
sCL sES sSS sES sFW sTW sCL sCW sCL sLI sES
sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sSR
sSS sES sSS sSR sSS sSS sSS sSS sSS sLI sSR
sTW sFW sSS sTW sFW sTW sCL sTW sLA sLI sTW
sES sES sSS sES sFW sTW sCL sCW sLA sES sES
sCL sCL sSS sCL sCL sTW sCL sCL sCL sCL sCL
sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
sCL sFW sSS sTW sFW sTW sCL sCW sLA sLI sTW
sCL sES sSS sES sFW sTW sCL sCW sCL sLI sES
sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sCL
";

    const COLUMNS: [&str; 11] = [
        "sNO", "sES", "sSS", "sSR", "sFW", "sTW", "sCL", "sCW", "sLA", "sLI", "sSA",
    ];

    #[test]
    fn every_transition_of_the_kernel_table() {
        let rows: Vec<Vec<&str>> = KERNEL_TABLE
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 12);
        let mut checked = 0;
        for (block, (dir, no_output)) in [
            (Direction::Input, false),
            (Direction::Output, false),
            (Direction::Input, true),
        ]
        .into_iter()
        .enumerate()
        {
            for (r, (fname, flag)) in FLAGS.iter().enumerate() {
                for (c, cur) in COLUMNS.iter().enumerate() {
                    let want = st(rows[block * 4 + r][c]);
                    let got = tcp_transition(st(cur), dir, *flag, no_output);
                    assert_eq!(got, want, "{dir:?} no_output={no_output} {fname} from {cur}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 132);
    }

    #[test]
    fn flag_priority_is_rst_then_syn_then_fin_then_ack() {
        let es = ConnState::Established;
        // RST wins over everything.
        let all = TcpFlags::RST | TcpFlags::SYN | TcpFlags::FIN | TcpFlags::ACK;
        assert_eq!(tcp_transition(es, Direction::Input, all, false), ConnState::Close);
        // SYN wins over FIN/ACK: syn row keeps ES.
        let synfin = TcpFlags::SYN | TcpFlags::FIN | TcpFlags::ACK;
        assert_eq!(
            tcp_transition(es, Direction::Input, synfin, false),
            ConnState::Established
        );
        // FIN wins over ACK: ES + FIN|ACK input → CLOSE_WAIT.
        let finack = TcpFlags::FIN | TcpFlags::ACK;
        assert_eq!(
            tcp_transition(es, Direction::Input, finack, false),
            ConnState::CloseWait
        );
        // No flag at all: CLOSE, as the kernel's default new_state.
        assert_eq!(
            tcp_transition(es, Direction::Input, TcpFlags::NONE, false),
            ConnState::Close
        );
    }

    fn key(cport: u16) -> ConnKeyIn {
        ConnKeyIn::new(
            Protocol::Tcp,
            sa(&format!("10.0.0.1:{cport}")),
            sa("192.0.2.1:80"),
        )
    }

    #[test]
    fn nat_connection_lifecycle_drives_states_and_dest_counters() {
        let t = ConnTable::with_capacity(64);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_secs(100);
        let c = t
            .insert(
                NewConn::new(key(1000), ForwardMethod::Masq, sa("10.1.0.5:8080"), &d),
                now,
            )
            .unwrap();
        assert_eq!(c.state(), ConnState::None);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
        let step = |dir, f| t.on_packet(&c, dir, f, now).unwrap();
        assert_eq!(step(Direction::Input, TcpFlags::SYN), ConnState::SynRecv);
        assert_eq!(
            step(Direction::Output, TcpFlags::SYN | TcpFlags::ACK),
            ConnState::SynRecv
        );
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
        assert_eq!(step(Direction::Input, TcpFlags::ACK), ConnState::Established);
        assert_eq!(
            (d.active_conns(), d.inactive_conns()),
            (1, 0),
            "ESTABLISHED counts as active"
        );
        assert_eq!(
            step(Direction::Input, TcpFlags::FIN | TcpFlags::ACK),
            ConnState::CloseWait
        );
        assert_eq!(
            (d.active_conns(), d.inactive_conns()),
            (0, 1),
            "leaving ESTABLISHED makes it inactive"
        );
        assert_eq!(
            step(Direction::Output, TcpFlags::FIN | TcpFlags::ACK),
            ConnState::TimeWait
        );
        assert_eq!(step(Direction::Input, TcpFlags::ACK), ConnState::TimeWait);
        // The listing shows the state by its IPVS name.
        let rows: Vec<ConnInfo> = t.iter(now).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state.name(), "TIME_WAIT");
        // Expiry releases the destination.
        t.expire(now, 100);
        t.expire(Time::from_secs(100 + 121), 100);
        assert!(t.lookup_in(&key(1000)).is_none());
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 0));
    }

    #[test]
    fn direct_routing_uses_the_input_only_table() {
        let t = ConnTable::with_capacity(64);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_secs(1);
        for method in [ForwardMethod::DirectRoute, ForwardMethod::Tunnel] {
            let k = key(if method == ForwardMethod::Tunnel { 2 } else { 1 });
            let c = t
                .insert(NewConn::new(k, method, sa("10.1.0.5:80"), &d), now)
                .unwrap();
            assert_eq!(
                t.on_packet(&c, Direction::Input, TcpFlags::SYN, now),
                Some(ConnState::SynRecv)
            );
            assert_eq!(
                t.on_packet(&c, Direction::Input, TcpFlags::ACK, now),
                Some(ConnState::Established)
            );
            // ES + FIN on the input-only table: FIN_WAIT (the normal INPUT table says CLOSE_WAIT).
            assert_eq!(
                t.on_packet(&c, Direction::Input, TcpFlags::FIN | TcpFlags::ACK, now),
                Some(ConnState::FinWait)
            );
            // RST from FIN_WAIT: CLOSE.
            assert_eq!(
                t.on_packet(&c, Direction::Input, TcpFlags::RST, now),
                Some(ConnState::Close)
            );
        }
        // And a NAT connection with the same flags takes the INPUT table.
        let c = t
            .insert(
                NewConn::new(key(3), ForwardMethod::Masq, sa("10.1.0.5:80"), &d),
                now,
            )
            .unwrap();
        t.on_packet(&c, Direction::Input, TcpFlags::SYN, now);
        t.on_packet(&c, Direction::Input, TcpFlags::ACK, now);
        assert_eq!(
            t.on_packet(&c, Direction::Input, TcpFlags::FIN | TcpFlags::ACK, now),
            Some(ConnState::CloseWait)
        );
    }

    /// Drives a fresh NAT connection into `target` with real packets and returns it.
    #[test]
    fn plain_acks_keep_established_and_a_dr_reply_still_leaves_the_input_only_table() {
        let t = ConnTable::with_capacity(64);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_secs(1);
        let ack_psh = TcpFlags(TcpFlags::ACK.0 | 0x08);
        for (port, method) in [(1, ForwardMethod::Masq), (2, ForwardMethod::DirectRoute)] {
            let c = t
                .insert(NewConn::new(key(port), method, sa("10.1.0.5:80"), &d), now)
                .unwrap();
            t.on_packet(&c, Direction::Input, TcpFlags::SYN, now);
            t.on_packet(&c, Direction::Input, TcpFlags::ACK, now);
            for dir in [Direction::Input, Direction::Output, Direction::Input] {
                assert_eq!(t.on_packet(&c, dir, ack_psh, now), Some(ConnState::Established));
            }
            // The DR connection saw a reply: its input now takes the INPUT table (CLOSE_WAIT,
            // where the input-only table says FIN_WAIT).
            assert_eq!(
                t.on_packet(&c, Direction::Input, TcpFlags::FIN | TcpFlags::ACK, now),
                Some(ConnState::CloseWait),
                "{method:?}"
            );
            // A segment with no flag at all closes, as in the kernel (no table row).
            assert_eq!(
                t.on_packet(&c, Direction::Input, TcpFlags::NONE, now),
                Some(ConnState::Close)
            );
        }
    }

    fn conn_in_state(t: &ConnTable, d: &Arc<DestState>, cport: u16, target: ConnState, now: Time) -> ConnRef {
        let method = ForwardMethod::Masq;
        let c = t
            .insert(NewConn::new(key(cport), method, sa("10.1.0.5:80"), d), now)
            .unwrap();
        use Direction::*;
        let path: &[(Direction, TcpFlags)] = match target {
            ConnState::None => &[],
            ConnState::SynRecv => &[(Input, TcpFlags::SYN)],
            ConnState::Established => &[(Input, TcpFlags::SYN), (Input, TcpFlags::ACK)],
            ConnState::SynSent => &[(Output, TcpFlags::SYN)],
            ConnState::FinWait => &[
                (Input, TcpFlags::SYN),
                (Input, TcpFlags::ACK),
                (Output, TcpFlags::FIN),
            ],
            ConnState::TimeWait => &[(Output, TcpFlags::FIN)],
            ConnState::Close => &[(Input, TcpFlags::RST)],
            ConnState::CloseWait => &[
                (Input, TcpFlags::SYN),
                (Input, TcpFlags::ACK),
                (Input, TcpFlags::FIN),
            ],
            _ => unreachable!(),
        };
        for (dir, f) in path {
            t.on_packet(&c, *dir, *f, now);
        }
        assert_eq!(t.lookup_in(&key(cport)).unwrap().state(), target);
        c
    }

    #[test]
    fn each_state_expires_after_its_default_timeout_on_a_fake_clock() {
        let cases = [
            (ConnState::None, 2),
            (ConnState::SynRecv, 60),
            (ConnState::Established, 900),
            (ConnState::SynSent, 120),
            (ConnState::FinWait, 120),
            (ConnState::TimeWait, 120),
            (ConnState::Close, 10),
            (ConnState::CloseWait, 60),
        ];
        for (i, (state, secs)) in cases.into_iter().enumerate() {
            let t = ConnTable::with_capacity(16);
            let d = Arc::new(DestState::new(0, 0));
            let t0 = Time::from_secs(1_000);
            assert_eq!(t.timeouts().secs(state), secs, "{state:?} default");
            conn_in_state(&t, &d, 100 + i as u16, state, t0);
            t.expire(t0, 1000);
            // Still there one second before its timeout.
            t.expire(Time::from_secs(1_000 + secs as u64 - 1), 1000);
            assert!(
                t.lookup_in(&key(100 + i as u16)).is_some(),
                "{state:?} expired early"
            );
            // Gone just after (wheel ticks are 250 ms).
            assert_eq!(
                t.expire(Time::from_secs(1_000 + secs as u64 + 1), 1000),
                1,
                "{state:?}"
            );
            assert!(
                t.lookup_in(&key(100 + i as u16)).is_none(),
                "{state:?} not expired"
            );
            assert_eq!(d.total_conns(), 0);
        }
        // The remaining defaults, checked as values.
        let t = ConnTable::with_capacity(1);
        assert_eq!(t.timeouts().secs(ConnState::LastAck), 30);
        assert_eq!(t.timeouts().secs(ConnState::Listen), 120);
        assert_eq!(t.timeouts().secs(ConnState::SynAck), 120);
        assert_eq!(t.timeouts().secs(ConnState::Udp), 300);
    }

    #[test]
    fn udp_connections_live_300s_after_their_last_packet() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let k = ConnKeyIn::new(Protocol::Udp, sa("10.0.0.9:5353"), sa("192.0.2.1:53"));
        let c = t
            .insert(
                NewConn::new(k, ForwardMethod::Masq, sa("10.1.0.5:53"), &d),
                Time::from_secs(0),
            )
            .unwrap();
        assert_eq!(c.state(), ConnState::Udp);
        assert_eq!(
            (d.active_conns(), d.inactive_conns()),
            (0, 1),
            "UDP is always inactive"
        );
        // A packet at t=200 s pushes expiry to 500 s.
        t.on_packet(&c, Direction::Input, TcpFlags::NONE, Time::from_secs(200));
        t.expire(Time::from_secs(400), 1000);
        assert!(t.lookup_in(&k).is_some());
        t.expire(Time::from_secs(499), 1000);
        assert!(t.lookup_in(&k).is_some());
        t.expire(Time::from_secs(501), 1000);
        assert!(t.lookup_in(&k).is_none());
    }

    #[test]
    fn set_timeouts_changes_tcp_tcpfin_udp_at_run_time() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        t.set_timeouts(30, 7, 0);
        assert_eq!(t.timeouts().get(), (30, 7, 300), "0 leaves udp unchanged");
        let t0 = Time::from_secs(10);
        conn_in_state(&t, &d, 1, ConnState::Established, t0);
        conn_in_state(&t, &d, 2, ConnState::FinWait, t0);
        t.expire(t0, 100);
        t.expire(Time::from_secs(10 + 8), 100);
        assert!(t.lookup_in(&key(1)).is_some());
        assert!(t.lookup_in(&key(2)).is_none(), "tcpfin 7 s");
        t.expire(Time::from_secs(10 + 31), 100);
        assert!(t.lookup_in(&key(1)).is_none(), "tcp 30 s");
    }

    #[test]
    fn established_connection_refreshed_by_traffic_survives_hours() {
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let c = conn_in_state(&t, &d, 1, ConnState::Established, Time::ZERO);
        // A packet every 10 minutes for 5 hours, housekeeping every 30 s.
        let mut now = 0u64;
        while now < 5 * 3600 {
            if now.is_multiple_of(600) {
                assert_eq!(
                    t.on_packet(&c, Direction::Input, TcpFlags::ACK, Time::from_secs(now)),
                    Some(ConnState::Established)
                );
            }
            t.expire(Time::from_secs(now), 10_000);
            now += 30;
        }
        assert!(t.lookup_in(&key(1)).is_some());
        assert_eq!(d.active_conns(), 1);
        // Silence: gone 900 s after the last packet (at 17400 s).
        t.expire(Time::from_secs(17_400 + 899), 10_000);
        assert!(t.lookup_in(&key(1)).is_some());
        t.expire(Time::from_secs(17_400 + 901), 10_000);
        assert!(t.lookup_in(&key(1)).is_none());
        assert_eq!(d.active_conns(), 0);
        assert_eq!(
            t.on_packet(&c, Direction::Input, TcpFlags::ACK, Time::from_secs(20_000)),
            None,
            "stale handle"
        );
    }

    #[test]
    fn a_shorter_timeout_after_a_state_change_takes_effect_at_once() {
        // ESTABLISHED (900 s) then RST → CLOSE (10 s): the entry must go 10 s later, not 900.
        let t = ConnTable::with_capacity(16);
        let d = Arc::new(DestState::new(0, 0));
        let t0 = Time::from_secs(50);
        let c = conn_in_state(&t, &d, 7, ConnState::Established, t0);
        t.expire(t0, 100);
        let t1 = Time::from_secs(60);
        assert_eq!(
            t.on_packet(&c, Direction::Input, TcpFlags::RST, t1),
            Some(ConnState::Close)
        );
        t.expire(Time::from_secs(69), 100);
        assert!(t.lookup_in(&key(7)).is_some());
        assert_eq!(t.expire(Time::from_secs(71), 100), 1);
        assert!(t.lookup_in(&key(7)).is_none());
    }

    #[test]
    fn random_packets_follow_the_transition_table_counters_and_timeouts() {
        // Long pseudo-random packet sequences on NAT and DR connections: every on_packet
        // agrees with the kernel table (input-only for DR until a reply shows up), the
        // destination counts the connection active exactly while ESTABLISHED, and the entry
        // expires one timeout of its last state after its last packet, whether that timeout
        // is longer or shorter than the one before.
        let flags = [
            TcpFlags::SYN,
            TcpFlags::ACK,
            TcpFlags::FIN | TcpFlags::ACK,
            TcpFlags::RST,
            TcpFlags::SYN | TcpFlags::ACK,
            TcpFlags::NONE,
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for (round, method) in [ForwardMethod::Masq, ForwardMethod::DirectRoute]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let t = ConnTable::with_capacity(16);
            let d = Arc::new(DestState::new(0, 0));
            let mut now = 10_000u64;
            t.expire(Time::from_millis(now), 100);
            let c = t
                .insert(
                    NewConn::new(key(500), method, sa("10.1.0.5:80"), &d),
                    Time::from_millis(now),
                )
                .unwrap();
            let mut state = ConnState::None;
            let mut no_output = method == ForwardMethod::DirectRoute;
            for step in 0..60 {
                now += 1 + next(3000);
                // DR replies are rare (they normally bypass the director).
                let dir = if next(if no_output { 8 } else { 2 }) == 0 {
                    Direction::Output
                } else {
                    Direction::Input
                };
                let f = flags[next(flags.len() as u64) as usize];
                let want = tcp_transition(state, dir, f, no_output);
                let got = t.on_packet(&c, dir, f, Time::from_millis(now));
                assert_eq!(
                    got,
                    Some(want),
                    "round {round} step {step}: {state:?} {dir:?} {f:?} no_output={no_output}"
                );
                state = want;
                no_output &= dir == Direction::Input;
                let active = u32::from(state.is_active());
                assert_eq!((d.active_conns(), d.inactive_conns()), (active, 1 - active));
                assert_eq!(t.lookup_in(&key(500)).unwrap().state(), state);
                if next(4) == 0 {
                    t.expire(Time::from_millis(now), 100);
                }
            }
            let timeout = u64::from(DEFAULT_TIMEOUTS[state as usize]) * 1000;
            t.expire(Time::from_millis(now + timeout - 1), 100);
            assert!(
                t.lookup_in(&key(500)).is_some(),
                "round {round}: {state:?} gone early"
            );
            // The wheel's granularity is 250 ms.
            t.expire(Time::from_millis(now + timeout + 250), 100);
            assert!(
                t.lookup_in(&key(500)).is_none(),
                "round {round}: {state:?} not expired"
            );
            assert_eq!((d.active_conns(), d.inactive_conns()), (0, 0));
        }
    }

    #[test]
    fn expiry_respects_its_budget_and_resumes() {
        let t = ConnTable::with_capacity(256);
        let d = Arc::new(DestState::new(0, 0));
        for p in 0..200u16 {
            conn_in_state(&t, &d, 1000 + p, ConnState::Close, Time::from_secs(5));
        }
        t.expire(Time::from_secs(5), 0);
        let later = Time::from_secs(5 + 11);
        assert_eq!(t.expire(later, 64), 64);
        assert_eq!(t.len(), 136);
        assert_eq!(t.expire(later, 64), 64);
        assert_eq!(t.expire(later, 1000), 72);
        assert_eq!(t.len(), 0);
        assert_eq!(t.counters().expired, 200);
    }
}
