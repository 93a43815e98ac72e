//! Reads the kernel's routing and neighbour tables of the current network namespace over
//! rtnetlink, and interface facts (index, MAC, MTU) from sysfs, to fill the pipeline's
//! [`RouteTable`] and [`NeighTable`].

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::neigh::{MacAddr, NeighTable};
use crate::route::{Route, RouteTable};
use crate::wire::ethernet::parse_mac;

/// A unicast route of the kernel's main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination prefix (0.0.0.0 / :: for a default route).
    pub prefix: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Output interface index.
    pub oif: u32,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
}

/// A resolved entry of the kernel's neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelNeighbour {
    /// Interface index.
    pub ifindex: u32,
    /// Neighbour address.
    pub addr: IpAddr,
    /// Its MAC address.
    pub mac: MacAddr,
    /// The kernel confirmed it recently (REACHABLE) or it is static (PERMANENT); STALE,
    /// DELAY and PROBE entries are not.
    pub confirmed: bool,
}

fn dump(msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 1 << 16];
    // Bounded: a dump of a namespace's tables never needs more than this many reads.
    for _ in 0..10_000 {
        let n = sock.recv(&mut &mut rx[..], 0)?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {e}")))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("rtnetlink error: {e:?}")));
                }
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
    Err(io::Error::other("rtnetlink dump did not finish"))
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Dumps the unicast routes of the main table, IPv4 and IPv6.
pub fn dump_routes() -> io::Result<Vec<KernelRoute>> {
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        for m in dump(RouteNetlinkMessage::GetRoute(msg))? {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
                continue;
            }
            let mut prefix = None;
            let mut oif = None;
            let mut gateway = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => prefix = route_addr(d),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(g) => gateway = route_addr(g),
                    _ => {}
                }
            }
            let prefix = prefix.unwrap_or(match family {
                AddressFamily::Inet => IpAddr::from([0u8; 4]),
                _ => IpAddr::from([0u8; 16]),
            });
            if let Some(oif) = oif {
                routes.push(KernelRoute {
                    prefix,
                    len: r.header.destination_prefix_length,
                    oif,
                    gateway,
                });
            }
        }
    }
    Ok(routes)
}

/// Dumps the neighbour entries that hold a MAC address (reachable, stale, permanent...).
pub fn dump_neighbours() -> io::Result<Vec<KernelNeighbour>> {
    let mut out = Vec::new();
    for m in dump(RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()))? {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        if matches!(
            n.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::Noarp
        ) {
            continue;
        }
        let confirmed = matches!(
            n.header.state,
            NeighbourState::Reachable | NeighbourState::Permanent
        );
        let mut addr = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => addr = Some(IpAddr::V4(*v4)),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => addr = Some(IpAddr::V6(*v6)),
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]);
                }
                _ => {}
            }
        }
        if let (Some(addr), Some(mac)) = (addr, mac) {
            out.push(KernelNeighbour {
                ifindex: n.header.ifindex,
                addr,
                mac,
                confirmed,
            });
        }
    }
    Ok(out)
}

/// An address configured on an interface of this namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAddress {
    /// Interface index.
    pub ifindex: u32,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// Dumps the IPv4 and IPv6 addresses configured in this namespace.
pub fn dump_addresses() -> io::Result<Vec<KernelAddress>> {
    let mut out = Vec::new();
    for m in dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))? {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        // IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise.
        let mut addr = None;
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(l) => addr = Some(*l),
                AddressAttribute::Address(x) if addr.is_none() => addr = Some(*x),
                _ => {}
            }
        }
        if let Some(addr) = addr {
            out.push(KernelAddress {
                ifindex: a.header.index,
                addr,
                prefix_len: a.header.prefix_len,
            });
        }
    }
    Ok(out)
}

/// Facts about one interface, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Name.
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// MAC address.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Receive queues (AF_XDP binds one socket per queue).
    pub rx_queues: u32,
}

fn sysfs(name: &str, attr: &str) -> io::Result<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("interface {name}: cannot read {attr}: {e}")))
}

/// Reads index, MAC and MTU of interface `name`.
pub fn interface_info(name: &str) -> io::Result<InterfaceInfo> {
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("interface {name}: bad {what}"),
        )
    };
    let ifindex = sysfs(name, "ifindex")?.parse().map_err(|_| bad("ifindex"))?;
    let mtu = sysfs(name, "mtu")?.parse().map_err(|_| bad("mtu"))?;
    let mac = parse_mac(&sysfs(name, "address")?).ok_or_else(|| bad("address"))?;
    let rx_queues = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1) as u32;
    Ok(InterfaceInfo {
        name: name.to_string(),
        ifindex,
        mac,
        mtu,
        rx_queues,
    })
}

/// Fills `routes` and `neigh` from the kernel, keeping only what goes through `ifaces` (the
/// worker's interfaces, in their numbering). Returns how many routes and neighbours were
/// taken.
pub fn load_tables(
    ifaces: &[InterfaceInfo],
    routes: &RouteTable,
    neigh: &NeighTable,
) -> io::Result<(usize, usize)> {
    let number = |ifindex: u32| ifaces.iter().position(|i| i.ifindex == ifindex).map(|p| p as u16);
    let rs: Vec<Route> = dump_routes()?
        .into_iter()
        .filter_map(|r| {
            number(r.oif).map(|iface| Route {
                prefix: r.prefix,
                len: r.len,
                iface,
                gateway: r.gateway,
            })
        })
        .collect();
    let nr = rs.len();
    routes.replace(rs);
    let mut nn = 0;
    for n in dump_neighbours()? {
        if number(n.ifindex).is_some() {
            // A STALE kernel entry may be older than what lvs saw on the wire (with AF_XDP
            // the kernel does not see the ARP traffic for lvs's addresses): it only fills gaps.
            if n.confirmed {
                neigh.insert(n.addr, n.mac);
            } else {
                neigh.insert_stale(n.addr, n.mac);
            }
            nn += 1;
        }
    }
    Ok((nr, nn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts_and_a_route_dump_work_here() {
        // Every namespace has `lo`; reading it needs no privileges.
        let lo = interface_info("lo").expect("lo");
        assert_eq!(lo.mac, [0; 6]);
        assert!(lo.ifindex >= 1);
        assert!(interface_info("../etc").is_err());
        // A dump must parse whatever this namespace holds (possibly nothing).
        let routes = dump_routes().expect("route dump");
        for r in routes {
            assert!(r.len <= 128);
        }
        dump_neighbours().expect("neighbour dump");
        let addrs = dump_addresses().expect("address dump");
        assert!(
            addrs
                .iter()
                .any(|a| a.ifindex == lo.ifindex && a.addr == IpAddr::from([127, 0, 0, 1])),
            "127.0.0.1 on lo: {addrs:?}"
        );
    }
}
