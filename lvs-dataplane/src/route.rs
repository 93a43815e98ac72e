//! The routing view of the pipeline: which interface and next hop reach an address. Filled by
//! the I/O layer from the kernel's routing table; read lock-free per packet.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// One route: a prefix, the interface (the worker's interface number) and an optional gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Network address of the prefix.
    pub prefix: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Interface number (index into the worker's interface list).
    pub iface: u16,
    /// Next-hop router; `None` for an on-link prefix (the destination itself is the next hop).
    pub gateway: Option<IpAddr>,
}

/// Where a packet to some address goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Interface number.
    pub iface: u16,
    /// Address whose MAC the frame is sent to.
    pub addr: IpAddr,
}

impl Route {
    /// True when `addr` falls in this route's prefix.
    #[inline]
    pub fn matches(&self, addr: IpAddr) -> bool {
        // The bits above the prefix length agree (no masks built per call).
        match (addr, self.prefix) {
            (IpAddr::V4(a), IpAddr::V4(p)) => {
                let len = self.len.min(32) as u32;
                len == 0 || (u32::from(a) ^ u32::from(p)) >> (32 - len) == 0
            }
            (IpAddr::V6(a), IpAddr::V6(p)) => {
                let len = self.len.min(128) as u32;
                len == 0 || (u128::from(a) ^ u128::from(p)) >> (128 - len) == 0
            }
            _ => false,
        }
    }
}

/// Routes sorted longest prefix first; a lookup is a short linear scan (tables here hold a
/// handful of routes: the connected prefixes and a default).
#[derive(Default)]
pub struct RouteTable {
    routes: ArcSwap<Vec<Route>>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.routes.load().iter()).finish()
    }
}

impl RouteTable {
    /// A table holding `routes`.
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let t = RouteTable::default();
        t.replace(routes);
        t
    }

    /// Replaces every route atomically.
    pub fn replace(&self, mut routes: Vec<Route>) {
        routes.sort_by_key(|r| std::cmp::Reverse(r.len));
        self.routes.store(Arc::new(routes));
    }

    /// The next hop for `dst` (longest prefix match), or `None` without a route.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<NextHop> {
        lookup_in(&self.routes.load(), dst)
    }

    /// The swap cell of the route list (sorted longest prefix first), for a per-worker
    /// `arc_swap::Cache`. Update only through [`replace`](Self::replace).
    #[inline]
    pub fn current(&self) -> &ArcSwap<Vec<Route>> {
        &self.routes
    }
}

/// The next hop for `dst` in `routes` (sorted longest prefix first, as [`RouteTable`] keeps
/// them).
#[inline]
pub fn lookup_in(routes: &[Route], dst: IpAddr) -> Option<NextHop> {
    routes.iter().find(|r| r.matches(dst)).map(|r| NextHop {
        iface: r.iface,
        addr: r.gateway.unwrap_or(dst),
    })
}

/// The IPv4 routes of a route list (sorted longest prefix first, as [`RouteTable`] keeps
/// them) as plain masks, for the per-packet lookup: [`V4Routes::lookup`] answers exactly what
/// [`lookup_in`] answers for an IPv4 address, without matching address families per route.
/// Built per worker when the route list changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V4Routes {
    /// (network, mask, interface, gateway), in the list's order.
    routes: Vec<(u32, u32, u16, Option<IpAddr>)>,
    /// The same routes as 16-byte entries for [`lookup_u32`](Self::lookup_u32).
    hops: Vec<V4Hop>,
}

/// A compiled IPv4 route: `dst & mask == net` selects it; `gw` is the next hop's address
/// when `kind` is [`V4Hop::GATEWAY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct V4Hop {
    net: u32,
    mask: u32,
    gw: u32,
    iface: u16,
    kind: u8,
}

impl V4Hop {
    /// On-link: the destination is its own next hop.
    const LINK: u8 = 0;
    /// Through an IPv4 gateway.
    const GATEWAY: u8 = 1;
    /// Through an IPv6 gateway (no IPv4 next hop).
    const GATEWAY6: u8 = 2;
}

impl V4Routes {
    /// The IPv4 routes of `routes`, in their order.
    pub fn compile(routes: &[Route]) -> V4Routes {
        let routes: Vec<_> = routes
            .iter()
            .filter_map(|r| match r.prefix {
                IpAddr::V4(p) => {
                    let len = r.len.min(32) as u32;
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    Some((u32::from(p) & mask, mask, r.iface, r.gateway))
                }
                IpAddr::V6(_) => None,
            })
            .collect();
        let hops = routes
            .iter()
            .map(|&(net, mask, iface, gw)| {
                let (kind, gw) = match gw {
                    None => (V4Hop::LINK, 0),
                    Some(IpAddr::V4(g)) => (V4Hop::GATEWAY, u32::from(g)),
                    Some(IpAddr::V6(_)) => (V4Hop::GATEWAY6, 0),
                };
                V4Hop {
                    net,
                    mask,
                    gw,
                    iface,
                    kind,
                }
            })
            .collect();
        V4Routes { routes, hops }
    }

    /// [`lookup`](Self::lookup) in numbers: the interface and the next hop's address (`dst`
    /// itself when on-link) for destination `dst`; `None` also for an IPv6 gateway.
    #[inline]
    pub fn lookup_u32(&self, dst: u32) -> Option<(u16, u32)> {
        let h = self.hops.iter().find(|h| dst & h.mask == h.net)?;
        match h.kind {
            V4Hop::LINK => Some((h.iface, dst)),
            V4Hop::GATEWAY => Some((h.iface, h.gw)),
            _ => None,
        }
    }

    /// The next hop for `dst`: the first route whose prefix holds it.
    #[inline]
    pub fn lookup(&self, dst: std::net::Ipv4Addr) -> Option<NextHop> {
        let a = u32::from(dst);
        self.routes
            .iter()
            .find(|&&(net, mask, _, _)| a & mask == net)
            .map(|&(_, _, iface, gw)| NextHop {
                iface,
                addr: gw.unwrap_or(IpAddr::V4(dst)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_v4_lookup_agrees_with_lookup() {
        let r = |p: &str, len, iface, gw: Option<&str>| Route {
            prefix: p.parse().unwrap(),
            len,
            iface,
            gateway: gw.map(|g| g.parse().unwrap()),
        };
        let routes = [
            r("10.1.0.0", 16, 1, None),
            r("10.2.0.0", 16, 2, Some("fe80::1")),
            r("10.0.0.0", 8, 0, Some("10.1.0.254")),
            r("0.0.0.0", 0, 3, Some("192.168.0.1")),
        ];
        let v4 = V4Routes::compile(&routes);
        for a in ["10.1.2.3", "10.2.0.9", "10.9.9.9", "8.8.8.8", "10.1.0.254"] {
            let a: std::net::Ipv4Addr = a.parse().unwrap();
            let want = v4.lookup(a).and_then(|h| match h.addr {
                IpAddr::V4(x) => Some((h.iface, u32::from(x))),
                IpAddr::V6(_) => None,
            });
            assert_eq!(v4.lookup_u32(u32::from(a)), want, "{a}");
        }
        assert_eq!(
            v4.lookup_u32(u32::from(std::net::Ipv4Addr::new(10, 9, 9, 9))),
            Some((0, 0x0a01_00fe))
        );
    }

    /// The reference: both sides masked to the prefix length.
    fn masked(addr: IpAddr, len: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let m = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - len.min(32) as u32)
                };
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len.min(128) as u32)
                };
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    #[test]
    fn matches_agrees_with_masking_at_every_length() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let (a, p) = (next(), next());
            // Share a random number of leading bits so both outcomes occur.
            let keep = (next() % 129) as u32;
            let p128 = (
                (a as u128) << 64 | next() as u128,
                (p as u128) << 64 | next() as u128,
            );
            let mask = if keep == 0 { 0 } else { u128::MAX << (128 - keep) };
            let (a6, p6) = (p128.0, (p128.0 & mask) | (p128.1 & !mask));
            let (a4, p4) = ((a6 >> 96) as u32, (p6 >> 96) as u32);
            for len in [0u8, 1, 7, 8, 16, 23, 24, 31, 32, 33, 48, 64, 100, 127, 128] {
                for (addr, prefix) in [
                    (IpAddr::V4(a4.into()), IpAddr::V4(p4.into())),
                    (IpAddr::V6(a6.into()), IpAddr::V6(p6.into())),
                    (IpAddr::V4(a4.into()), IpAddr::V6(p6.into())),
                ] {
                    let r = Route {
                        prefix,
                        len,
                        iface: 0,
                        gateway: None,
                    };
                    let want = addr.is_ipv4() == prefix.is_ipv4() && masked(addr, len) == masked(prefix, len);
                    assert_eq!(r.matches(addr), want, "{addr} in {prefix}/{len}");
                }
            }
        }
    }

    #[test]
    fn compiled_v4_routes_answer_like_the_list() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..300 {
            // A few routes of both families around one random base, some nested.
            let base = next() as u32;
            let mut routes: Vec<Route> = (0..1 + next() % 6)
                .map(|i| {
                    let len = (next() % 34) as u8;
                    let prefix = if next() % 5 == 0 {
                        IpAddr::V6(((base as u128) << 96 | next() as u128).into())
                    } else {
                        IpAddr::V4((base ^ (next() as u32 >> (next() % 33).min(31))).into())
                    };
                    let gateway = match next() % 3 {
                        0 => None,
                        1 => Some(IpAddr::V4((next() as u32).into())),
                        _ => Some(IpAddr::V6((next() as u128).into())),
                    };
                    Route {
                        prefix,
                        len,
                        iface: i as u16,
                        gateway,
                    }
                })
                .collect();
            routes.sort_by_key(|r| std::cmp::Reverse(r.len));
            let compiled = V4Routes::compile(&routes);
            for _ in 0..50 {
                let a = std::net::Ipv4Addr::from(base ^ (next() as u32 >> (next() % 33).min(31)));
                assert_eq!(
                    compiled.lookup(a),
                    lookup_in(&routes, IpAddr::V4(a)),
                    "{a} in {routes:?}"
                );
            }
        }
    }

    #[test]
    fn longest_prefix_wins_and_gateway_is_next_hop() {
        let t = RouteTable::new(vec![
            Route {
                prefix: [0, 0, 0, 0].into(),
                len: 0,
                iface: 0,
                gateway: Some([10, 0, 0, 1].into()),
            },
            Route {
                prefix: [10, 77, 2, 0].into(),
                len: 24,
                iface: 1,
                gateway: None,
            },
            Route {
                prefix: "2001:db8::".parse().unwrap(),
                len: 64,
                iface: 2,
                gateway: None,
            },
        ]);
        assert_eq!(
            t.lookup([10, 77, 2, 9].into()),
            Some(NextHop {
                iface: 1,
                addr: [10, 77, 2, 9].into()
            })
        );
        assert_eq!(
            t.lookup([8, 8, 8, 8].into()),
            Some(NextHop {
                iface: 0,
                addr: [10, 0, 0, 1].into()
            })
        );
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        assert_eq!(t.lookup(v6), Some(NextHop { iface: 2, addr: v6 }));
        assert_eq!(
            t.lookup("2001:db9::5".parse().unwrap()),
            None,
            "no v6 default route"
        );
    }
}
