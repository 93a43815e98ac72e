//! The XDP program that steers the balancer's traffic to the AF_XDP sockets, hand-assembled
//! (no clang, no libbpf) with a comment per instruction, and its maps.
//!
//! The program redirects to the socket of the receiving queue (XSKMAP slot = `rx_queue_index`):
//! - IPv4/IPv6 frames whose destination is a balancer address (a VIP or a FULLNAT LIP);
//! - TCP/UDP/SCTP frames whose source is a Masq real server's RIP:rport (NAT replies);
//! - ARP frames (requests and replies) whose target protocol address is a balancer address, and
//!   IPv6 neighbour solicitations whose target is one.
//!
//! Everything else (ARP for the host, SSH, VLAN-tagged frames, non-first IPv4 fragments of
//! replies, IPv6 with extension headers before TCP/UDP) is passed to the kernel. When the
//! queue's XSKMAP slot is empty, `bpf_redirect_map` returns the configured fallback action.
//!
//! Maps (one [`BalancerAddrs`] shared by every interface, one XSKMAP per [`XdpSteering`]):
//! - `lvs_addrs`: BPF_MAP_TYPE_HASH, key 20 bytes `{family: u8 (4|6), kind: u8 (0 = balancer
//!   address, 1 = real server), port: u16 (network order, 0 for kind 0), addr: [u8; 16] (IPv4
//!   in the first 4 bytes, the rest zero)}`, value `u32` (unused, 1).
//! - `lvs_xsks`: BPF_MAP_TYPE_XSKMAP, key `u32` queue index, value the AF_XDP socket fd.

use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::bpf::{self, BpfInsn, BpfMap, BpfProg};
use super::sys;

/// XDP return codes (enum xdp_action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XdpAction {
    /// XDP_ABORTED.
    Aborted = 0,
    /// XDP_DROP.
    Drop = 1,
    /// XDP_PASS: to the kernel stack.
    Pass = 2,
    /// XDP_TX.
    Tx = 3,
    /// XDP_REDIRECT: to the AF_XDP socket.
    Redirect = 4,
}

/// Size of a key of the `lvs_addrs` map.
pub const ADDR_KEY_SIZE: usize = 20;
const KIND_LOCAL: u8 = 0;
const KIND_REAL_SERVER: u8 = 1;
const KIND_HOST: u8 = 2;

/// The `lvs_addrs` key of a balancer address (VIP or LIP): matched against the destination
/// of IP frames and the target of ARP requests / neighbour solicitations.
pub fn local_key(addr: IpAddr) -> [u8; ADDR_KEY_SIZE] {
    let mut k = [0u8; ADDR_KEY_SIZE];
    k[1] = KIND_LOCAL;
    match addr {
        IpAddr::V4(a) => {
            k[0] = 4;
            k[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            k[0] = 6;
            k[4..20].copy_from_slice(&a.octets());
        }
    }
    k
}

/// The `lvs_addrs` key of one of the host's own addresses (e.g. the DIP): frames to it are
/// always the kernel's, even from a real server's RIP:rport (the director's own health
/// checks of a NAT real server are answered to the DIP).
pub fn host_key(addr: IpAddr) -> [u8; ADDR_KEY_SIZE] {
    let mut k = local_key(addr);
    k[1] = KIND_HOST;
    k
}

/// The `lvs_addrs` key of a Masq real server RIP:rport: matched against the source of
/// TCP/UDP/SCTP frames (the replies of NAT connections).
pub fn real_server_key(rs: SocketAddr) -> [u8; ADDR_KEY_SIZE] {
    let mut k = local_key(rs.ip());
    k[1] = KIND_REAL_SERVER;
    k[2..4].copy_from_slice(&rs.port().to_be_bytes());
    k
}

/// The shared hash map of the balancer's addresses that userspace fills at run time.
#[derive(Debug)]
pub struct BalancerAddrs {
    map: BpfMap,
}

impl BalancerAddrs {
    /// Creates the map with room for `max_entries` addresses.
    pub fn new(max_entries: u32) -> io::Result<BalancerAddrs> {
        let map = BpfMap::create(
            bpf::BPF_MAP_TYPE_HASH,
            ADDR_KEY_SIZE as u32,
            4,
            max_entries,
            "lvs_addrs",
        )?;
        Ok(BalancerAddrs { map })
    }

    /// Steers traffic to `addr` (a VIP or a LIP), and ARP/NDP for it, to lvs.
    pub fn add_local(&self, addr: IpAddr) -> io::Result<()> {
        self.map.update(&local_key(addr), &1u32.to_ne_bytes())
    }

    /// Stops steering `addr`; false if it was not there.
    pub fn remove_local(&self, addr: IpAddr) -> io::Result<bool> {
        self.map.delete(&local_key(addr))
    }

    /// Steers frames from the Masq real server `rs` (RIP:rport) to lvs.
    pub fn add_real_server(&self, rs: SocketAddr) -> io::Result<()> {
        self.map.update(&real_server_key(rs), &1u32.to_ne_bytes())
    }

    /// Stops steering frames from `rs`; false if it was not there.
    pub fn remove_real_server(&self, rs: SocketAddr) -> io::Result<bool> {
        self.map.delete(&real_server_key(rs))
    }

    /// Marks `addr` as the host's own: frames to it go to the kernel whatever their source.
    pub fn add_host(&self, addr: IpAddr) -> io::Result<()> {
        self.map.update(&host_key(addr), &1u32.to_ne_bytes())
    }

    /// Forgets a host address added with [`add_host`](Self::add_host).
    pub fn remove_host(&self, addr: IpAddr) -> io::Result<bool> {
        self.map.delete(&host_key(addr))
    }

    /// True if `key` (from [`local_key`] / [`real_server_key`] / [`host_key`]) is in the map.
    pub fn contains(&self, key: &[u8; ADDR_KEY_SIZE]) -> io::Result<bool> {
        let mut v = [0u8; 4];
        self.map.lookup(key, &mut v)
    }
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP: any device, slower.
    Generic,
}

/// An assembled program: instructions and one comment per instruction.
#[derive(Debug, Clone)]
pub struct XdpProgram {
    /// The instructions.
    pub insns: Vec<BpfInsn>,
    /// What each instruction does (same index; the second half of a 64-bit load says so).
    pub comments: Vec<&'static str>,
}

impl XdpProgram {
    /// Readable listing: index, raw instruction, comment.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        for (i, (insn, c)) in self.insns.iter().zip(&self.comments).enumerate() {
            let _ = writeln!(
                s,
                "{i:3}: {:02x} {:02x} {:6} {:11}  ; {c}",
                insn.code, insn.regs, insn.off, insn.imm
            );
        }
        s
    }
}

impl fmt::Display for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.listing())
    }
}

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const ADD64_REG: u8 = 0x0f; // BPF_ALU64 | BPF_ADD | BPF_X
const AND64_IMM: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const LSH64_IMM: u8 = 0x67; // BPF_ALU64 | BPF_LSH | BPF_K
const LDXW: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const LDXH: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
const LDXB: u8 = 0x71; // BPF_LDX | BPF_MEM | BPF_B
const STXW: u8 = 0x63; // BPF_STX | BPF_MEM | BPF_W
const STXH: u8 = 0x6b; // BPF_STX | BPF_MEM | BPF_H
const STXDW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
const STB: u8 = 0x72; // BPF_ST | BPF_MEM | BPF_B
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const JA: u8 = 0x05; // BPF_JMP | BPF_JA
const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JLT_IMM: u8 = 0xa5; // BPF_JMP | BPF_JLT | BPF_K
const JGT_REG: u8 = 0x2d; // BPF_JMP | BPF_JGT | BPF_X
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
const PSEUDO_MAP_FD: u8 = 1; // src_reg of LD_IMM64: imm is a map fd
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_REDIRECT_MAP: i32 = 51;

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R10: u8 = 10;

// The key lives at fp-24 (8-byte aligned): family -24, kind -23, port -22, addr -20..-4.
const KEY: i16 = -24;
const KEY_FAMILY: i16 = KEY;
const KEY_KIND: i16 = KEY + 1;
const KEY_PORT: i16 = KEY + 2;
const KEY_ADDR: i16 = KEY + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Ipv4,
    Ipv4Ports,
    Ipv6,
    Ipv6Ports,
    Ndp,
    Redirect,
    Pass,
}

/// A tiny assembler: instructions with comments, and jumps to labels fixed up at the end.
struct Asm {
    prog: XdpProgram,
    labels: Vec<(Label, usize)>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            prog: XdpProgram {
                insns: Vec::with_capacity(128),
                comments: Vec::with_capacity(128),
            },
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    fn i(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32, comment: &'static str) {
        self.prog.insns.push(BpfInsn::new(code, dst, src, off, imm));
        self.prog.comments.push(comment);
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label, comment: &'static str) {
        self.fixups.push((self.prog.insns.len(), to));
        self.i(code, dst, src, 0, imm, comment);
    }

    fn label(&mut self, l: Label) {
        self.labels.push((l, self.prog.insns.len()));
    }

    fn ld_map_fd(&mut self, dst: u8, fd: i32, comment: &'static str) {
        self.i(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd, comment);
        self.i(0, 0, 0, 0, 0, "  (second half of the 64-bit load)");
    }

    /// `if (bpf_map_lookup_elem(&lvs_addrs, key)) goto REDIRECT`.
    fn lookup_or_redirect(&mut self, addrs_fd: i32) {
        self.i(MOV64_REG, R2, R10, 0, 0, "r2 = fp");
        self.i(ADD64_IMM, R2, 0, 0, KEY as i32, "r2 = &key (fp-24)");
        self.ld_map_fd(R1, addrs_fd, "r1 = &lvs_addrs");
        self.i(
            CALL,
            0,
            0,
            0,
            HELPER_MAP_LOOKUP_ELEM,
            "r0 = bpf_map_lookup_elem(r1, r2)",
        );
        self.jump(JNE_IMM, R0, 0, 0, Label::Redirect, "found: redirect to lvs");
    }

    /// `if (bpf_map_lookup_elem(&lvs_addrs, key)) goto PASS` (a host address).
    fn lookup_or_pass(&mut self, addrs_fd: i32) {
        self.i(MOV64_REG, R2, R10, 0, 0, "r2 = fp");
        self.i(ADD64_IMM, R2, 0, 0, KEY as i32, "r2 = &key (fp-24)");
        self.ld_map_fd(R1, addrs_fd, "r1 = &lvs_addrs");
        self.i(
            CALL,
            0,
            0,
            0,
            HELPER_MAP_LOOKUP_ELEM,
            "r0 = bpf_map_lookup_elem(r1, r2)",
        );
        self.jump(JNE_IMM, R0, 0, 0, Label::Pass, "a host address: the kernel's");
    }

    /// Bounds check: `if (data + len > data_end) goto PASS`.
    fn need(&mut self, len: i32, comment: &'static str) {
        self.i(MOV64_REG, R2, R7, 0, 0, "r2 = data");
        self.i(ADD64_IMM, R2, 0, 0, len, comment);
        self.jump(JGT_REG, R2, R8, 0, Label::Pass, "too short: pass");
    }

    /// Copies the 16-byte IPv6 address at packet offset `at` into key.addr.
    fn copy_addr16(&mut self, at: i16, comment: [&'static str; 4]) {
        for (w, c) in comment.into_iter().enumerate() {
            let w = w as i16 * 4;
            self.i(LDXW, R1, R7, at + w, 0, c);
            self.i(STXW, R10, R1, KEY_ADDR + w, 0, "  -> key.addr");
        }
    }

    fn finish(mut self) -> XdpProgram {
        for &(at, to) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|&(_, pc)| pc)
                .expect("label defined");
            self.prog.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.prog
    }
}

/// Assembles the steering program for the map descriptors `addrs_fd` (`lvs_addrs`) and
/// `xsks_fd` (`lvs_xsks`); `fallback` is returned when the queue has no socket.
pub fn assemble(addrs_fd: i32, xsks_fd: i32, fallback: XdpAction) -> XdpProgram {
    use Label::*;
    let mut a = Asm::new();
    // Prologue: keep ctx, data and data_end in callee-saved registers; zero the key.
    a.i(MOV64_REG, R6, R1, 0, 0, "r6 = ctx (struct xdp_md *)");
    a.i(LDXW, R7, R6, 0, 0, "r7 = ctx->data");
    a.i(LDXW, R8, R6, 4, 0, "r8 = ctx->data_end");
    a.i(MOV64_IMM, R1, 0, 0, 0, "r1 = 0");
    a.i(STXDW, R10, R1, -24, 0, "key[0..8] = 0");
    a.i(STXDW, R10, R1, -16, 0, "key[8..16] = 0");
    a.i(STXDW, R10, R1, -8, 0, "key[16..20] = 0 (and 4 bytes of padding)");
    a.need(14, "r2 = data + Ethernet header");
    a.i(
        LDXH,
        R1,
        R7,
        12,
        0,
        "r1 = ethertype (big-endian bytes read little-endian)",
    );
    a.jump(JEQ_IMM, R1, 0, 0x0008, Ipv4, "0x0800 IPv4");
    a.jump(JEQ_IMM, R1, 0, 0xdd86, Ipv6, "0x86dd IPv6");
    a.jump(JNE_IMM, R1, 0, 0x0608, Pass, "not 0x0806 ARP either: pass");
    // ARP: redirect if the target protocol address is a balancer address.
    a.need(42, "r2 = data + Ethernet + 28-byte ARP for IPv4");
    a.i(STB, R10, 0, KEY_FAMILY, 4, "key.family = 4");
    a.i(LDXW, R1, R7, 38, 0, "r1 = ARP target protocol address");
    a.i(STXW, R10, R1, KEY_ADDR, 0, "key.addr = target");
    a.lookup_or_redirect(addrs_fd);
    a.jump(JA, 0, 0, 0, Pass, "not ours: pass");

    // IPv4: destination is a VIP/LIP, or source is a real server's RIP:rport.
    a.label(Ipv4);
    a.need(34, "r2 = data + Ethernet + 20-byte IPv4 header");
    a.i(STB, R10, 0, KEY_FAMILY, 4, "key.family = 4");
    a.i(LDXW, R1, R7, 30, 0, "r1 = IPv4 destination address");
    a.i(STXW, R10, R1, KEY_ADDR, 0, "key.addr = destination");
    a.lookup_or_redirect(addrs_fd);
    a.i(STB, R10, 0, KEY_KIND, 2, "key.kind = host address");
    a.lookup_or_pass(addrs_fd);
    a.i(LDXB, R1, R7, 23, 0, "r1 = IPv4 protocol");
    a.jump(JEQ_IMM, R1, 0, 6, Ipv4Ports, "TCP");
    a.jump(JEQ_IMM, R1, 0, 17, Ipv4Ports, "UDP");
    a.jump(JNE_IMM, R1, 0, 132, Pass, "not SCTP either: pass");
    a.label(Ipv4Ports);
    a.i(
        LDXH,
        R1,
        R7,
        20,
        0,
        "r1 = flags + fragment offset (read little-endian)",
    );
    a.i(AND64_IMM, R1, 0, 0, 0xff1f, "r1 = fragment offset bits");
    a.jump(JNE_IMM, R1, 0, 0, Pass, "non-first fragment, no ports: pass");
    a.i(LDXB, R1, R7, 14, 0, "r1 = version + IHL");
    a.i(AND64_IMM, R1, 0, 0, 0x0f, "r1 = IHL");
    a.i(LSH64_IMM, R1, 0, 0, 2, "r1 = IPv4 header length (0..60)");
    a.jump(JLT_IMM, R1, 0, 20, Pass, "bogus IHL: pass");
    a.i(MOV64_REG, R2, R7, 0, 0, "r2 = data");
    a.i(
        ADD64_REG,
        R2,
        R1,
        0,
        0,
        "r2 = data + IHL*4 (the L4 header is at r2 + 14)",
    );
    a.i(MOV64_REG, R3, R2, 0, 0, "r3 = r2");
    a.i(ADD64_IMM, R3, 0, 0, 18, "r3 = end of the two L4 ports");
    a.jump(JGT_REG, R3, R8, 0, Pass, "too short: pass");
    a.i(LDXH, R1, R2, 14, 0, "r1 = L4 source port (network order)");
    a.i(STXH, R10, R1, KEY_PORT, 0, "key.port = source port");
    a.i(STB, R10, 0, KEY_KIND, 1, "key.kind = real server");
    a.i(LDXW, R1, R7, 26, 0, "r1 = IPv4 source address");
    a.i(STXW, R10, R1, KEY_ADDR, 0, "key.addr = source");
    a.lookup_or_redirect(addrs_fd);
    a.jump(JA, 0, 0, 0, Pass, "not ours: pass");

    // IPv6: the same, plus neighbour solicitations for a balancer address.
    a.label(Ipv6);
    a.need(54, "r2 = data + Ethernet + 40-byte IPv6 header");
    a.i(STB, R10, 0, KEY_FAMILY, 6, "key.family = 6");
    a.copy_addr16(
        38,
        [
            "r1 = IPv6 destination [0..4]",
            "r1 = IPv6 destination [4..8]",
            "r1 = IPv6 destination [8..12]",
            "r1 = IPv6 destination [12..16]",
        ],
    );
    a.lookup_or_redirect(addrs_fd);
    a.i(STB, R10, 0, KEY_KIND, 2, "key.kind = host address");
    a.lookup_or_pass(addrs_fd);
    a.i(
        STB,
        R10,
        0,
        KEY_KIND,
        0,
        "key.kind = balancer address (for the NS target)",
    );
    a.i(LDXB, R1, R7, 20, 0, "r1 = IPv6 next header");
    a.jump(JEQ_IMM, R1, 0, 58, Ndp, "ICMPv6");
    a.jump(JEQ_IMM, R1, 0, 6, Ipv6Ports, "TCP");
    a.jump(JEQ_IMM, R1, 0, 17, Ipv6Ports, "UDP");
    a.jump(JNE_IMM, R1, 0, 132, Pass, "not SCTP either: pass");
    a.label(Ipv6Ports);
    a.need(58, "r2 = data + Ethernet + IPv6 + the two L4 ports");
    a.i(LDXH, R1, R7, 54, 0, "r1 = L4 source port (network order)");
    a.i(STXH, R10, R1, KEY_PORT, 0, "key.port = source port");
    a.i(STB, R10, 0, KEY_KIND, 1, "key.kind = real server");
    a.copy_addr16(
        22,
        [
            "r1 = IPv6 source [0..4]",
            "r1 = IPv6 source [4..8]",
            "r1 = IPv6 source [8..12]",
            "r1 = IPv6 source [12..16]",
        ],
    );
    a.lookup_or_redirect(addrs_fd);
    a.jump(JA, 0, 0, 0, Pass, "not ours: pass");
    a.label(Ndp);
    a.need(78, "r2 = data + Ethernet + IPv6 + ICMPv6 NS header and target");
    a.i(LDXB, R1, R7, 54, 0, "r1 = ICMPv6 type");
    a.jump(JNE_IMM, R1, 0, 135, Pass, "not a neighbour solicitation: pass");
    a.copy_addr16(
        62,
        [
            "r1 = NS target [0..4]",
            "r1 = NS target [4..8]",
            "r1 = NS target [8..12]",
            "r1 = NS target [12..16]",
        ],
    );
    a.lookup_or_redirect(addrs_fd);
    a.jump(JA, 0, 0, 0, Pass, "not ours: pass");

    a.label(Redirect);
    a.i(LDXW, R2, R6, 16, 0, "r2 = ctx->rx_queue_index (the XSKMAP slot)");
    a.ld_map_fd(R1, xsks_fd, "r1 = &lvs_xsks");
    a.i(
        MOV64_IMM,
        R3,
        0,
        0,
        fallback as i32,
        "r3 = action if the slot is empty",
    );
    a.i(
        CALL,
        0,
        0,
        0,
        HELPER_REDIRECT_MAP,
        "r0 = bpf_redirect_map(r1, r2, r3)",
    );
    a.i(EXIT, 0, 0, 0, 0, "return r0");
    a.label(Pass);
    a.i(MOV64_IMM, R0, 0, 0, XdpAction::Pass as i32, "r0 = XDP_PASS");
    a.i(EXIT, 0, 0, 0, 0, "return r0");
    a.finish()
}

/// The steering program of one interface: its XSKMAP, the loaded program (reading the shared
/// [`BalancerAddrs`]) and, once attached, the XDP link. Dropping it (or the process dying)
/// detaches the program.
#[derive(Debug)]
pub struct XdpSteering {
    xsks: BpfMap,
    prog: BpfProg,
    program: XdpProgram,
    link: Option<(u32, OwnedFd)>,
}

impl XdpSteering {
    /// Creates an XSKMAP of `queues` slots and loads the program over `addrs`; `fallback` is
    /// the action for a balancer frame on a queue without a socket (XDP_PASS in production).
    pub fn load(addrs: &BalancerAddrs, queues: u32, fallback: XdpAction) -> io::Result<Self> {
        let xsks = BpfMap::create(bpf::BPF_MAP_TYPE_XSKMAP, 4, 4, queues.max(1), "lvs_xsks")?;
        let program = assemble(addrs.map.as_fd().as_raw_fd(), xsks.as_fd().as_raw_fd(), fallback);
        let prog = BpfProg::load(bpf::BPF_PROG_TYPE_XDP, &program.insns, "lvs_steer")?;
        Ok(XdpSteering {
            xsks,
            prog,
            program,
            link: None,
        })
    }

    /// The assembled program (for listings).
    pub fn program(&self) -> &XdpProgram {
        &self.program
    }

    /// Attaches the program to interface `ifindex` through a BPF link.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> io::Result<()> {
        let flags = match mode {
            XdpMode::Native => bpf::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => bpf::XDP_FLAGS_SKB_MODE,
        };
        let link = self.prog.attach_xdp(ifindex, flags)?;
        self.link = Some((ifindex, link));
        Ok(())
    }

    /// Attaches in native mode, or in generic mode when the driver refuses native XDP;
    /// returns the mode used.
    pub fn attach_best(&mut self, ifindex: u32) -> io::Result<XdpMode> {
        match self.attach(ifindex, XdpMode::Native) {
            Ok(()) => Ok(XdpMode::Native),
            Err(native) => match self.attach(ifindex, XdpMode::Generic) {
                Ok(()) => Ok(XdpMode::Generic),
                Err(_) => Err(native),
            },
        }
    }

    /// Attaches to the interface called `name`.
    pub fn attach_by_name(&mut self, name: &str, mode: XdpMode) -> io::Result<()> {
        self.attach(sys::if_index(name)?, mode)
    }

    /// Detaches the program (closes the link).
    pub fn detach(&mut self) {
        self.link = None;
    }

    /// The interface the program is attached to.
    pub fn ifindex(&self) -> Option<u32> {
        self.link.as_ref().map(|(i, _)| *i)
    }

    /// Puts the AF_XDP socket `xsk` in slot `queue`.
    pub fn set_socket(&self, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
        let fd = xsk.as_raw_fd() as u32;
        self.xsks.update(&queue.to_ne_bytes(), &fd.to_ne_bytes())
    }

    /// Empties slot `queue` (the kernel also empties it when the socket closes). The XSKMAP
    /// answers success for an already empty slot.
    pub fn clear_socket(&self, queue: u32) -> io::Result<()> {
        self.xsks.delete(&queue.to_ne_bytes()).map(|_| ())
    }

    /// Runs the program on `frame` with BPF_PROG_TEST_RUN (queue 0) and returns its action.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        self.prog.test_run(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_every_path_exits() {
        let p = assemble(3, 4, XdpAction::Pass);
        assert_eq!(p.insns.len(), p.comments.len());
        let n = p.insns.len() as isize;
        for (pc, insn) in p.insns.iter().enumerate() {
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            if class == 0x05 && op != 0x80 && op != 0x90 {
                let to = pc as isize + 1 + insn.off as isize;
                assert!((0..n).contains(&to), "jump at {pc} to {to}");
                // Never into the second half of a 64-bit load.
                assert_ne!(p.comments[to as usize], "  (second half of the 64-bit load)");
            }
        }
        assert_eq!(p.insns.last().unwrap().code, EXIT);
        // The map descriptors are patched into the 64-bit loads.
        let fds: Vec<i32> = p
            .insns
            .iter()
            .filter(|i| i.code == LD_IMM64)
            .map(|i| i.imm)
            .collect();
        // Eight lookups (ARP, IPv4 dst, IPv4 host, IPv4 RS, IPv6 dst, IPv6 host, IPv6 RS,
        // NS target) and the XSKMAP.
        assert_eq!(fds, vec![3, 3, 3, 3, 3, 3, 3, 3, 4]);
    }

    #[test]
    fn keys_have_the_documented_layout() {
        let k = real_server_key("10.0.0.5:8080".parse().unwrap());
        assert_eq!(
            k,
            [4, 1, 0x1f, 0x90, 10, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let k = local_key("fd00::1".parse().unwrap());
        assert_eq!(&k[..4], &[6, 0, 0, 0]);
        assert_eq!(k[4], 0xfd);
        assert_eq!(k[19], 1);
    }
}
