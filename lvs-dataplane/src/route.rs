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

impl Route {
    /// True when `addr` falls in this route's prefix.
    #[inline]
    pub fn matches(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.prefix.is_ipv4() && masked(addr, self.len) == masked(self.prefix, self.len)
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

#[cfg(test)]
mod tests {
    use super::*;

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
