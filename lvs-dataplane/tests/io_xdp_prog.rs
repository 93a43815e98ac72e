//! The steering XDP program under BPF_PROG_TEST_RUN (needs root / CAP_BPF, no NIC): which
//! frames it redirects to lvs and which it passes to the kernel, IPv4 and IPv6, and run-time
//! map updates.

mod io_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use io_support::{frames, require_root};
use lvs_dataplane::io::xdp_prog::{BalancerAddrs, XdpAction, XdpSteering, local_key};

const VIP4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const HOST4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 7);
const RIP4: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 5);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x100);
const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 7);
const RIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 5);

/// The program with an empty XSKMAP returns the fallback for a redirected frame: DROP here so
/// "redirected" and "passed" are told apart without a socket.
fn steering() -> (BalancerAddrs, XdpSteering) {
    let addrs = BalancerAddrs::new(64).expect("create lvs_addrs");
    let st = XdpSteering::load(&addrs, 4, XdpAction::Drop).expect("load program");
    (addrs, st)
}

const REDIRECTED: u32 = XdpAction::Drop as u32;
const PASSED: u32 = XdpAction::Pass as u32;

#[test]
fn program_is_accepted_by_the_verifier_and_listed() {
    if !require_root("program_is_accepted_by_the_verifier_and_listed") {
        return;
    }
    let (_a, st) = steering();
    let p = st.program();
    assert_eq!(p.insns.len(), p.comments.len());
    println!("{} instructions\n{}", p.insns.len(), p.listing());
}

#[test]
fn ipv4_to_a_vip_is_redirected_only_while_the_vip_is_in_the_map() {
    if !require_root("ipv4_to_a_vip_is_redirected_only_while_the_vip_is_in_the_map") {
        return;
    }
    let (addrs, st) = steering();
    let to_vip = frames::udp4(CLIENT4, 40000, VIP4, 80, b"hello");
    let tcp_to_vip = frames::tcp4(CLIENT4, 40000, VIP4, 80);
    let to_host = frames::udp4(CLIENT4, 40000, HOST4, 22, b"ssh");
    assert_eq!(st.test_run(&to_vip).unwrap(), PASSED, "empty map");
    addrs.add_local(IpAddr::V4(VIP4)).unwrap();
    assert!(addrs.contains(&local_key(IpAddr::V4(VIP4))).unwrap());
    assert_eq!(st.test_run(&to_vip).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&tcp_to_vip).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&to_host).unwrap(), PASSED);
    assert!(addrs.remove_local(IpAddr::V4(VIP4)).unwrap());
    assert!(!addrs.remove_local(IpAddr::V4(VIP4)).unwrap());
    assert_eq!(st.test_run(&to_vip).unwrap(), PASSED, "after removal");
}

#[test]
fn arp_for_a_vip_is_redirected_and_arp_for_the_host_is_passed() {
    if !require_root("arp_for_a_vip_is_redirected_and_arp_for_the_host_is_passed") {
        return;
    }
    let (addrs, st) = steering();
    addrs.add_local(IpAddr::V4(VIP4)).unwrap();
    let for_vip = frames::arp_request(CLIENT4, VIP4);
    let for_host = frames::arp_request(CLIENT4, HOST4);
    assert_eq!(st.test_run(&for_vip).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&for_host).unwrap(), PASSED);
    // A reply whose target (the asker) is a balancer address comes to lvs too.
    let reply_to_vip = frames::arp_reply(CLIENT4, VIP4);
    assert_eq!(st.test_run(&reply_to_vip).unwrap(), REDIRECTED);
    let reply_to_host = frames::arp_reply(CLIENT4, HOST4);
    assert_eq!(st.test_run(&reply_to_host).unwrap(), PASSED);
}

#[test]
fn ipv4_replies_from_a_masq_real_server_port_are_redirected() {
    if !require_root("ipv4_replies_from_a_masq_real_server_port_are_redirected") {
        return;
    }
    let (addrs, st) = steering();
    let rs = SocketAddr::new(IpAddr::V4(RIP4), 8080);
    let reply = frames::tcp4(RIP4, 8080, CLIENT4, 40000);
    let other_port = frames::tcp4(RIP4, 22, CLIENT4, 40000);
    let udp_reply = frames::udp4(RIP4, 8080, CLIENT4, 40000, b"x");
    assert_eq!(st.test_run(&reply).unwrap(), PASSED);
    addrs.add_real_server(rs).unwrap();
    assert_eq!(st.test_run(&reply).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&udp_reply).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&other_port).unwrap(), PASSED, "SSH of the RS");
    // A non-first fragment carries no ports: passed.
    let mut frag = reply.clone();
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x10;
    frames::fix_ipv4_checksum(&mut frag);
    assert_eq!(st.test_run(&frag).unwrap(), PASSED);
    // IPv4 options move the ports: still found.
    let with_opts = frames::tcp4_with_options(RIP4, 8080, CLIENT4, 40000);
    assert_eq!(st.test_run(&with_opts).unwrap(), REDIRECTED);
    // The director's own connection to the real server (a health check) is answered to a
    // host address: the kernel's, never lvs's.
    let to_host = frames::tcp4(RIP4, 8080, HOST4, 50000);
    assert_eq!(
        st.test_run(&to_host).unwrap(),
        REDIRECTED,
        "before the host address is known"
    );
    addrs.add_host(IpAddr::V4(HOST4)).unwrap();
    assert_eq!(st.test_run(&to_host).unwrap(), PASSED);
    assert_eq!(
        st.test_run(&reply).unwrap(),
        REDIRECTED,
        "replies to clients still come to lvs"
    );
    let to_host6 = frames::tcp6(RIP6, 8080, HOST6, 50000);
    addrs
        .add_real_server(SocketAddr::new(IpAddr::V6(RIP6), 8080))
        .unwrap();
    assert_eq!(st.test_run(&to_host6).unwrap(), REDIRECTED);
    addrs.add_host(IpAddr::V6(HOST6)).unwrap();
    assert_eq!(st.test_run(&to_host6).unwrap(), PASSED);
    assert!(addrs.remove_host(IpAddr::V4(HOST4)).unwrap());
    assert!(addrs.remove_real_server(rs).unwrap());
    assert_eq!(st.test_run(&reply).unwrap(), PASSED);
}

#[test]
fn ipv6_vip_real_server_and_neighbour_solicitation() {
    if !require_root("ipv6_vip_real_server_and_neighbour_solicitation") {
        return;
    }
    let (addrs, st) = steering();
    let to_vip = frames::tcp6(CLIENT6, 40000, VIP6, 443);
    let to_host = frames::tcp6(CLIENT6, 40000, HOST6, 22);
    let reply = frames::udp6(RIP6, 53, CLIENT6, 40000);
    let ns_vip = frames::neighbour_solicitation(CLIENT6, VIP6);
    let ns_host = frames::neighbour_solicitation(CLIENT6, HOST6);
    for f in [&to_vip, &to_host, &reply, &ns_vip, &ns_host] {
        assert_eq!(st.test_run(f).unwrap(), PASSED, "empty map");
    }
    addrs.add_local(IpAddr::V6(VIP6)).unwrap();
    addrs
        .add_real_server(SocketAddr::new(IpAddr::V6(RIP6), 53))
        .unwrap();
    assert_eq!(st.test_run(&to_vip).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&to_host).unwrap(), PASSED);
    assert_eq!(st.test_run(&reply).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&ns_vip).unwrap(), REDIRECTED);
    assert_eq!(st.test_run(&ns_host).unwrap(), PASSED);
    // An IPv4 VIP with the same low bytes does not match IPv6 and vice versa.
    let v4 = frames::udp4(CLIENT4, 1, Ipv4Addr::new(0xfd, 0, 0, 1), 80, b"");
    assert_eq!(st.test_run(&v4).unwrap(), PASSED);
    assert!(addrs.remove_local(IpAddr::V6(VIP6)).unwrap());
    assert_eq!(st.test_run(&to_vip).unwrap(), PASSED);
    assert_eq!(st.test_run(&ns_vip).unwrap(), PASSED);
}

#[test]
fn short_and_foreign_frames_are_passed() {
    if !require_root("short_and_foreign_frames_are_passed") {
        return;
    }
    let (addrs, st) = steering();
    addrs.add_local(IpAddr::V4(VIP4)).unwrap();
    let full = frames::udp4(CLIENT4, 40000, VIP4, 80, b"hello");
    // Every truncation of a redirected frame shorter than the fields it needs is passed.
    for len in 14..34 {
        assert_eq!(st.test_run(&full[..len]).unwrap(), PASSED, "len {len}");
    }
    let mut vlan = frames::vlan_tagged(&full, 7);
    assert_eq!(st.test_run(&vlan).unwrap(), PASSED);
    vlan.truncate(20);
    assert_eq!(st.test_run(&vlan).unwrap(), PASSED);
    let mut lldp = full.clone();
    lldp[12] = 0x88;
    lldp[13] = 0xcc;
    assert_eq!(st.test_run(&lldp).unwrap(), PASSED);
}

#[test]
fn empty_socket_slot_returns_the_fallback() {
    if !require_root("empty_socket_slot_returns_the_fallback") {
        return;
    }
    let addrs = BalancerAddrs::new(8).unwrap();
    addrs.add_local(IpAddr::V4(VIP4)).unwrap();
    let st = XdpSteering::load(&addrs, 4, XdpAction::Pass).unwrap();
    let to_vip = frames::udp4(CLIENT4, 40000, VIP4, 80, b"hello");
    assert_eq!(st.test_run(&to_vip).unwrap(), PASSED);
    st.clear_socket(0).unwrap();
    assert_eq!(st.test_run(&to_vip).unwrap(), PASSED);
}
