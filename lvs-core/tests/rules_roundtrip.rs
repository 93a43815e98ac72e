//! Property: any rule set saved with `-S -n` restores to the same rules (ipvsadm-save does
//! not save thresholds, and restoring sorted `-a` lines reverses each destination list).
//!
//! Addresses and marks keep their top bit clear: libipvs compares them by subtracting
//! unsigned values into an `int`, which is not a consistent order across a 2^31 gap, so for
//! such rule sets ipvsadm's own sorted output depends on the input order (and so does ours).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lvs_core::rules::{RuleSet, config_views, format_save};
use lvs_core::service::AddrFamily;
use lvs_core::{
    DestConfig, ForwardMethod, PersistNetmask, Persistence, Protocol, SchedFlags, SchedulerKind,
    ServiceConfig, ServiceKey,
};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (0u8..3, 0x0100_0000u32..0x8000_0000, 1u16..=u16::MAX).prop_map(|(p, a, port)| ServiceKey::Addr {
            proto: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][p as usize],
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            port,
        }),
        (0u32..0x8000_0000, 1u16..=u16::MAX).prop_map(|(a, port)| ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) | (0x2001u128 << 112))),
            port,
        }),
        (1u32..0x8000_0000, any::<bool>()).prop_map(|(mark, v6)| ServiceKey::Fwmark {
            mark,
            family: if v6 { AddrFamily::Inet6 } else { AddrFamily::Inet },
        }),
    ]
}

fn service() -> impl Strategy<Value = ServiceConfig> {
    (
        key(),
        0usize..14,
        proptest::option::of((1u32..=86400, 0u8..=32)),
        any::<bool>(),
        proptest::collection::vec(
            (0x0100_0000u32..0x7fff_fff0, any::<u16>(), 0u32..=65535, 0u8..4),
            0..5,
        ),
    )
        .prop_map(|(key, s, persist, ops, dests)| {
            let mut cfg = ServiceConfig::new(key);
            cfg.scheduler = SchedulerKind::ALL[s];
            if cfg.scheduler == SchedulerKind::Sh {
                cfg.sched_flags = SchedFlags::FLAG2;
            }
            let family = key.family();
            cfg.persistence = persist.map(|(t, bits)| Persistence {
                timeout_secs: t,
                netmask: match family {
                    AddrFamily::Inet => PersistNetmask::V4(Ipv4Addr::from(u32::MAX << (32 - bits.max(1)))),
                    AddrFamily::Inet6 => PersistNetmask::V6(bits.max(1) * 4),
                },
            });
            let (svc_port, fwmark) = match key {
                ServiceKey::Addr { port, .. } => (port, false),
                ServiceKey::Fwmark { .. } => (0, true),
            };
            if ops
                && matches!(
                    key,
                    ServiceKey::Addr {
                        proto: Protocol::Udp,
                        ..
                    } | ServiceKey::Fwmark { .. }
                )
            {
                cfg.one_packet = true;
            }
            if !fwmark && svc_port == 0 && cfg.persistence.is_none() {
                cfg.persistence = Some(Persistence {
                    timeout_secs: 300,
                    netmask: PersistNetmask::default_for(family),
                });
            }
            let mut seen = HashSet::new();
            for (a, port, weight, m) in dests {
                let addr = match family {
                    AddrFamily::Inet => IpAddr::V4(Ipv4Addr::from(a)),
                    AddrFamily::Inet6 => {
                        IpAddr::V6(Ipv6Addr::from((u128::from(a) + 1) | (0x2001u128 << 112)))
                    }
                };
                let method = [
                    ForwardMethod::Masq,
                    ForwardMethod::DirectRoute,
                    ForwardMethod::Tunnel,
                    ForwardMethod::FullNat,
                ][m as usize];
                // DR and TUN always use the service port (ipvsadm forces it).
                let port = if !fwmark && matches!(method, ForwardMethod::DirectRoute | ForwardMethod::Tunnel)
                {
                    svc_port
                } else {
                    port
                };
                if seen.insert((addr, port)) {
                    cfg.dests.push(DestConfig {
                        addr,
                        port,
                        weight,
                        method,
                        upper_threshold: 0,
                        lower_threshold: 0,
                    });
                }
            }
            cfg
        })
}

proptest! {
    #[test]
    fn save_then_restore_reproduces_the_rules(services in proptest::collection::vec(service(), 0..6)) {
        let mut seen = HashSet::new();
        let services: Vec<ServiceConfig> = services.into_iter().filter(|s| seen.insert(s.key)).collect();
        let saved = format_save(&config_views(&services));
        let mut restored = RuleSet::new();
        restored.apply_batch(&saved).map_err(|e| TestCaseError::fail(format!("{e}\n{saved}")))?;
        prop_assert_eq!(format_save(&config_views(&restored.services)), saved.clone());
        for orig in &services {
            let back = restored.service(&orig.key).expect("service restored");
            prop_assert_eq!(back.scheduler, orig.scheduler);
            prop_assert_eq!(back.persistence, orig.persistence);
            prop_assert_eq!(back.one_packet, orig.one_packet);
            prop_assert_eq!(back.sched_flags, orig.sched_flags);
            let mut a = back.dests.clone();
            let mut b = orig.dests.clone();
            a.sort_by_key(|d| (d.addr, d.port));
            b.sort_by_key(|d| (d.addr, d.port));
            prop_assert_eq!(a, b);
        }
    }
}
