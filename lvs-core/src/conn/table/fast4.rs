//! The IPv4 forms of the packet path's table calls: keys of 32-bit addresses
//! ([`ConnKeyIn4`], [`ConnKeyOut4`]) for the burst prefetch and the hinted lookups, and a
//! small handle ([`Conn4`]) that the lookup returns by value and [`ConnTable::on_packet4`]
//! takes by value, so a packet of an IPv4 connection neither unpacks `IpAddr` keys nor
//! builds, stores and re-reads the 88-byte [`ConnRef`]. Same results and guarantees as the
//! general calls ([`ConnTable::lookup_in_hinted`], [`ConnTable::lookup_out_hinted`],
//! [`ConnTable::on_packet`]); the tests at the end pin that.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;

use super::{
    AF6, ConnKeyIn, ConnKeyOut, ConnRef, ConnTable, Entry, GEN_ONE, HAS_OUT, KEY_MASK, LookupHint, NCTL_MASK,
    NOOUTPUT, OUT_SEED, PREFETCH_BURST, PROTO_MASK, STATE_MASK, STATE_SHIFT, hash4, method_of, proto_bits,
    state_of,
};
use super::{ConnState, Direction, TcpFlags};
use crate::conn::seqlock::{gen_of, is_live, read_begin, read_end};
use crate::dest::ForwardMethod;
use crate::service::Protocol;
use crate::time::Time;

/// [`ConnKeyIn`] of an IPv4 packet: client → virtual address and ports, addresses as
/// their 32 bits (host order, `u32::from(Ipv4Addr)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKeyIn4 {
    /// Transport protocol.
    pub proto: Protocol,
    /// Client address.
    pub caddr: u32,
    /// Client port.
    pub cport: u16,
    /// Virtual (destination) address.
    pub vaddr: u32,
    /// Virtual port.
    pub vport: u16,
}

impl ConnKeyIn4 {
    /// The same key in the general form.
    pub fn key(&self) -> ConnKeyIn {
        ConnKeyIn {
            proto: self.proto,
            caddr: IpAddr::V4(Ipv4Addr::from(self.caddr)),
            cport: self.cport,
            vaddr: IpAddr::V4(Ipv4Addr::from(self.vaddr)),
            vport: self.vport,
        }
    }

    /// (kind bits, client | virtual << 32, cport | vport << 16), as the entry keeps them.
    #[inline(always)]
    pub(super) fn words(&self) -> (u64, u64, u64) {
        (
            proto_bits(Some(self.proto)),
            self.caddr as u64 | (self.vaddr as u64) << 32,
            self.cport as u64 | (self.vport as u64) << 16,
        )
    }
}

/// [`ConnKeyOut`] of an IPv4 reply: real server → client (NAT) or local address
/// (FULLNAT), addresses as their 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKeyOut4 {
    /// Transport protocol.
    pub proto: Protocol,
    /// Real server address (the reply's source).
    pub daddr: u32,
    /// Real server port.
    pub dport: u16,
    /// The reply's destination: the client address (NAT) or the local address (FULLNAT).
    pub addr: u32,
    /// The reply's destination port.
    pub port: u16,
}

impl ConnKeyOut4 {
    /// The same key in the general form.
    pub fn key(&self) -> ConnKeyOut {
        ConnKeyOut {
            proto: self.proto,
            daddr: IpAddr::V4(Ipv4Addr::from(self.daddr)),
            dport: self.dport,
            addr: IpAddr::V4(Ipv4Addr::from(self.addr)),
            port: self.port,
        }
    }

    /// The server-side hash of this key with seed `seed` (the table's, xor [`OUT_SEED`]).
    #[inline(always)]
    fn hash(&self, seed: u64) -> u64 {
        hash4(
            seed ^ OUT_SEED,
            self.daddr as u64 | (self.addr as u64) << 32,
            self.dport as u64 | (self.port as u64) << 16 | proto_bits(Some(self.proto)),
        )
    }
}

/// A found IPv4 connection, by value: its slot, its control word (generation, state,
/// method, destination id) and its address and port words, read consistently at lookup.
/// What [`ConnRef`] is for the general calls ([`Conn4::conn_ref`] gives that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn4 {
    idx: u32,
    ctl: u64,
    /// client | virtual << 32.
    cv: u64,
    /// destination | FULLNAT local address << 32 (0 for the other methods).
    dl: u64,
    /// cport | vport << 16 | dport << 32 | lport << 48.
    ports: u64,
}

impl Conn4 {
    /// Forwarding method.
    #[inline(always)]
    pub fn method(&self) -> ForwardMethod {
        method_of(self.ctl)
    }
    /// State when looked up.
    #[inline(always)]
    pub fn state(&self) -> ConnState {
        state_of(self.ctl)
    }
    /// Id of the destination the connection is bound to (as [`ConnRef::dest_id`]).
    #[inline(always)]
    pub fn dest_id(&self) -> u32 {
        (self.ctl & NCTL_MASK) as u32
    }
    /// Client address and port.
    #[inline(always)]
    pub fn client(&self) -> (u32, u16) {
        (self.cv as u32, self.ports as u16)
    }
    /// Virtual address and port.
    #[inline(always)]
    pub fn virt(&self) -> (u32, u16) {
        ((self.cv >> 32) as u32, (self.ports >> 16) as u16)
    }
    /// Real server address and port.
    #[inline(always)]
    pub fn dest(&self) -> (u32, u16) {
        (self.dl as u32, (self.ports >> 32) as u16)
    }
    /// FULLNAT local address and port (`None` for other methods).
    #[inline(always)]
    pub fn local(&self) -> Option<(u32, u16)> {
        (self.method() == ForwardMethod::FullNat)
            .then_some(((self.dl >> 32) as u32, (self.ports >> 48) as u16))
    }
    /// The handle of IPv4 slot `idx` from its words.
    #[inline(always)]
    pub(super) fn from_words(idx: u32, ctl: u64, cv: u64, dl: u64, ports: u64) -> Conn4 {
        Conn4 {
            idx,
            ctl,
            cv,
            dl,
            ports,
        }
    }
    /// Slot number.
    #[inline(always)]
    pub(super) fn idx(&self) -> u32 {
        self.idx
    }
    /// Control word when looked up (or to be published).
    #[inline(always)]
    pub(super) fn ctl(&self) -> u64 {
        self.ctl
    }
    /// client | virtual << 32.
    #[inline(always)]
    pub(super) fn cv(&self) -> u64 {
        self.cv
    }
    /// cport | vport << 16 | dport << 32 | lport << 48.
    #[inline(always)]
    pub(super) fn ports(&self) -> u64 {
        self.ports
    }
    /// The connection's client-side key.
    #[inline]
    pub fn key_in4(&self) -> ConnKeyIn4 {
        let (c, cport) = self.client();
        let (v, vport) = self.virt();
        ConnKeyIn4 {
            proto: super::proto_of(self.ctl).unwrap_or(Protocol::Tcp),
            caddr: c,
            cport,
            vaddr: v,
            vport,
        }
    }
    /// The general handle of the same connection.
    #[inline]
    pub fn conn_ref(&self) -> ConnRef {
        ConnTable::conn_ref4(self.idx, self.ctl, self.cv, self.dl, self.ports)
    }
}

impl ConnRef {
    /// The IPv4 handle of this connection (`None` for an IPv6 one).
    #[inline]
    pub fn v4(&self) -> Option<Conn4> {
        (self.ctl & AF6 == 0).then_some(Conn4 {
            idx: self.idx,
            ctl: self.ctl,
            cv: self.w[0],
            dl: self.w[1],
            ports: self.ports,
        })
    }
}

impl ConnTable {
    /// [`prefetch_in_hinted`](Self::prefetch_in_hinted) for IPv4 keys, ahead of
    /// [`lookup_in4`](Self::lookup_in4). At most `min(keys.len(), hints.len(),
    /// PREFETCH_BURST)` keys are used.
    pub fn prefetch_in4(&self, keys: &[ConnKeyIn4], hints: &mut [LookupHint]) {
        self.prefetch_in4_of(keys, |k| *k, hints);
    }

    /// [`prefetch_in4`](Self::prefetch_in4) over the keys `key` makes of `items` (e.g. a
    /// burst's parsed headers, without copying their keys out to an array first).
    #[inline(always)]
    pub fn prefetch_in4_of<T>(&self, items: &[T], key: impl Fn(&T) -> ConnKeyIn4, hints: &mut [LookupHint]) {
        let m = items.len().min(hints.len()).min(PREFETCH_BURST);
        for (h, t) in hints[..m].iter_mut().zip(&items[..m]) {
            let (want, cv, pw) = key(t).words();
            h.hash = hash4(self.seed, cv, pw | want);
        }
        self.prefetch_stages(&self.in_ix, &mut hints[..m]);
    }

    /// [`prefetch_out_hinted`](Self::prefetch_out_hinted) for IPv4 keys, ahead of
    /// [`lookup_out4`](Self::lookup_out4).
    pub fn prefetch_out4(&self, keys: &[ConnKeyOut4], hints: &mut [LookupHint]) {
        self.prefetch_out4_of(keys, |k| *k, hints);
    }

    /// [`prefetch_out4`](Self::prefetch_out4) over the keys `key` makes of `items`.
    #[inline(always)]
    pub fn prefetch_out4_of<T>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> ConnKeyOut4,
        hints: &mut [LookupHint],
    ) {
        let m = items.len().min(hints.len()).min(PREFETCH_BURST);
        for (h, t) in hints[..m].iter_mut().zip(&items[..m]) {
            h.hash = key(t).hash(self.seed);
        }
        self.prefetch_stages(&self.out_ix, &mut hints[..m]);
    }

    /// [`lookup_in_hinted`](Self::lookup_in_hinted) of an IPv4 key (`hint` from
    /// [`prefetch_in4`](Self::prefetch_in4) for the same key, or [`LookupHint::NONE`]):
    /// the same connection, as a [`Conn4`].
    ///
    /// The hinted entry is read inline; when it is not the key's, the index probe (out of
    /// line) names the slot that matched and that slot is read again by the same inline
    /// code (again probed if it changed in between), so the handle comes out of one place
    /// and stays in registers.
    #[inline(always)]
    pub fn lookup_in4(&self, k: &ConnKeyIn4, hint: &LookupHint) -> Option<Conn4> {
        let (want, cv, pw) = k.words();
        let hash = if hint.known() {
            debug_assert_eq!(hint.hash, hash4(self.seed, cv, pw | want), "hint of another key");
            hint.hash
        } else {
            hash4(self.seed, cv, pw | want)
        };
        let mut idx = hint.cand;
        loop {
            if let Some(e) = self.narrow.get(idx as usize)
                && let Some(c) = Self::read4_in(idx, e, read_begin(&e.ctl), want, cv, pw)
            {
                return Some(c);
            }
            idx = self.probe_in4_slot(hash, want, cv, pw)?;
        }
    }

    /// The index probe of [`lookup_in4`](Self::lookup_in4), out of line: the slot of the
    /// key's live entry.
    #[inline(never)]
    fn probe_in4_slot(&self, hash: u64, want: u64, cv: u64, pw: u64) -> Option<u32> {
        // Captured by value: the closure's words are not reached through pointers.
        let narrow = &self.narrow;
        self.in_ix.find(hash, move |idx| {
            let e = narrow.get(idx as usize)?;
            Self::read4_in(idx, e, read_begin(&e.ctl), want, cv, pw).map(|_| idx)
        })
    }

    /// The seqlock read of IPv4 slot `idx` against a client-side key; `g1` is its control
    /// word, loaded (acquire) first.
    #[inline(always)]
    pub(super) fn read4_in(idx: u32, e: &Entry, g1: u64, want: u64, cv: u64, pw: u64) -> Option<Conn4> {
        // Live (the generation's low bit clear) and of the key's kind, in one test.
        if g1 & (GEN_ONE | KEY_MASK) != want {
            return None;
        }
        let ecv = e.cv.load(Ordering::Relaxed);
        let ports = e.ports.load(Ordering::Relaxed);
        if ecv != cv || ports & 0xffff_ffff != pw {
            return None;
        }
        let dl = e.dl.load(Ordering::Relaxed);
        read_end(&e.ctl, g1).then(|| Conn4::from_words(idx, g1, cv, dl, ports))
    }

    /// [`lookup_out_hinted`](Self::lookup_out_hinted) of an IPv4 key (`hint` from
    /// [`prefetch_out4`](Self::prefetch_out4) for the same key, or [`LookupHint::NONE`]).
    /// Built as [`lookup_in4`](Self::lookup_in4).
    #[inline(always)]
    pub fn lookup_out4(&self, k: &ConnKeyOut4, hint: &LookupHint) -> Option<Conn4> {
        let hash = if hint.known() {
            debug_assert_eq!(hint.hash, k.hash(self.seed), "hint of another key");
            hint.hash
        } else {
            k.hash(self.seed)
        };
        // The key as words, passed by value (not stored for the probe's call).
        let (want, da, pp) = (
            proto_bits(Some(k.proto)),
            k.daddr as u64 | (k.addr as u64) << 32,
            k.dport as u32 | (k.port as u32) << 16,
        );
        let mut idx = hint.cand;
        loop {
            if let Some(c) = self.read4_out(idx, want, da, pp) {
                return Some(c);
            }
            idx = self.probe_out4_slot(hash, want, da, pp)?;
        }
    }

    /// The index probe of [`lookup_out4`](Self::lookup_out4), out of line: the slot of the
    /// key's live entry.
    #[inline(never)]
    fn probe_out4_slot(&self, hash: u64, want: u64, da: u64, pp: u32) -> Option<u32> {
        self.out_ix
            .find(hash, move |idx| self.read4_out(idx, want, da, pp).map(|_| idx))
    }

    /// The seqlock read of IPv4 slot `idx` against a server-side key (as `read_out4`): kind
    /// bits `want`, `da` = server | reply destination address << 32, `pp` = server port |
    /// reply destination port << 16.
    #[inline(always)]
    pub(super) fn read4_out(&self, idx: u32, want: u64, da: u64, pp: u32) -> Option<Conn4> {
        let e = self.narrow.get(idx as usize)?;
        let g1 = read_begin(&e.ctl);
        if !is_live(g1) || g1 & HAS_OUT == 0 || g1 & KEY_MASK != want {
            return None;
        }
        let cv = e.cv.load(Ordering::Relaxed);
        let dl = e.dl.load(Ordering::Relaxed);
        let ports = e.ports.load(Ordering::Relaxed);
        // The reply goes to the FULLNAT local address, else to the client.
        let (ra, rp) = if method_of(g1) == ForwardMethod::FullNat {
            (dl >> 32, (ports >> 48) as u16)
        } else {
            (cv & 0xffff_ffff, ports as u16)
        };
        if dl & 0xffff_ffff != da & 0xffff_ffff
            || (ports >> 32) as u16 != pp as u16
            || ra != da >> 32
            || rp != (pp >> 16) as u16
        {
            return None;
        }
        read_end(&e.ctl, g1).then(|| Conn4::from_words(idx, g1, cv, dl, ports))
    }

    /// [`on_packet`](Self::on_packet) for a connection found by [`lookup_in4`](Self::lookup_in4)
    /// or [`lookup_out4`](Self::lookup_out4): the same update and answer. The usual packet
    /// (a TCP ACK of an ESTABLISHED connection) is inline; everything else goes through
    /// `on_packet` out of line.
    #[inline(always)]
    pub fn on_packet4(&self, c: Conn4, dir: Direction, flags: TcpFlags, now: Time) -> Option<ConnState> {
        const TCP_EST: u64 = (1 << super::PROTO_SHIFT) | (ConnState::Established as u64) << STATE_SHIFT;
        const FLAGS: u8 = TcpFlags::ACK.0 | TcpFlags::SYN.0 | TcpFlags::FIN.0 | TcpFlags::RST.0;
        let e = self.narrow.get(c.idx as usize)?;
        let cur = e.ctl.load(Ordering::Acquire);
        if gen_of(cur) == gen_of(c.ctl)
            && cur & (PROTO_MASK | STATE_MASK) == TCP_EST
            && flags.0 & FLAGS == TcpFlags::ACK.0
            && (dir == Direction::Input || cur & NOOUTPUT == 0)
        {
            let ms = self.timeouts.millis(ConnState::Established);
            self.set_deadline(c.idx, e, now.as_millis() + ms);
            return Some(ConnState::Established);
        }
        self.on_packet4_other(c.idx, c.ctl, dir, flags, now)
    }

    /// The rest of [`on_packet4`](Self::on_packet4) for the connection in slot `idx` whose
    /// control word was `ctl` at lookup: [`on_packet`](Self::on_packet), which reads only
    /// the slot and the generation of its handle (so the addresses are not passed).
    #[inline(never)]
    fn on_packet4_other(
        &self,
        idx: u32,
        ctl: u64,
        dir: Direction,
        flags: TcpFlags,
        now: Time,
    ) -> Option<ConnState> {
        self.on_packet(&ConnTable::conn_ref4(idx, ctl, 0, 0, 0), dir, flags, now)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use super::*;
    use crate::conn::NewConn;
    use crate::dest::DestState;

    fn v4(a: u32, p: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)
    }

    const METHODS: [ForwardMethod; 4] = [
        ForwardMethod::Masq,
        ForwardMethod::DirectRoute,
        ForwardMethod::Tunnel,
        ForwardMethod::FullNat,
    ];

    /// A table with one connection per method and protocol; their client-side keys.
    fn filled(t: &ConnTable, dest: &Arc<DestState>) -> Vec<(ForwardMethod, ConnKeyIn4, ConnRef)> {
        let mut out = Vec::new();
        let now = Time::from_millis(1000);
        for (i, m) in METHODS.into_iter().enumerate() {
            for (j, proto) in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                .into_iter()
                .enumerate()
            {
                let k4 = ConnKeyIn4 {
                    proto,
                    caddr: 0x0a00_0001 + (i * 3 + j) as u32,
                    cport: 40000 + i as u16,
                    vaddr: 0xc0a8_0001,
                    vport: 80,
                };
                let mut nc = NewConn::new(k4.key(), m, v4(0xac10_0000 + i as u32, 8080), dest);
                if m == ForwardMethod::FullNat {
                    nc.local = Some(v4(0xc0a8_6401, 5000 + j as u16));
                }
                let c = t.insert(nc, now).expect("room");
                let c4 = c.v4().expect("an IPv4 connection");
                assert_eq!(c4.conn_ref(), c);
                assert_eq!(t.lookup_in4(&k4, &LookupHint::NONE), Some(c4));
                out.push((m, k4, c));
            }
        }
        out
    }

    #[test]
    fn ipv4_lookups_find_what_the_general_ones_find_with_and_without_hints() {
        let t = ConnTable::with_capacity(64);
        let dest = Arc::new(DestState::new(0, 0));
        let conns = filled(&t, &dest);
        let keys: Vec<ConnKeyIn4> = conns.iter().map(|c| c.1).collect();
        let mut hints = [LookupHint::NONE; PREFETCH_BURST];
        t.prefetch_in4(&keys, &mut hints);
        // The same hints from items the keys are made of.
        let mut of = [LookupHint::NONE; PREFETCH_BURST];
        let items: Vec<(u8, ConnKeyIn4)> = keys.iter().map(|k| (7, *k)).collect();
        t.prefetch_in4_of(&items, |i| i.1, &mut of);
        assert_eq!(of, hints);
        for (i, (m, k, c)) in conns.iter().enumerate() {
            for hint in [&hints[i], &LookupHint::NONE] {
                let found = t.lookup_in4(k, hint).expect("found");
                assert_eq!(found.conn_ref(), *c);
                assert_eq!(Some(found.conn_ref()), t.lookup_in(&k.key()));
                assert_eq!(found.method(), *m);
                assert_eq!(found.state(), c.state());
                assert_eq!(found.dest_id(), c.dest_id());
                assert_eq!(v4(found.client().0, found.client().1), c.client());
                assert_eq!(v4(found.virt().0, found.virt().1), c.virt());
                assert_eq!(v4(found.dest().0, found.dest().1), c.dest_addr());
                assert_eq!(found.local().map(|(a, p)| v4(a, p)), c.local());
            }
            // A hint of another key still finds this one (the index is probed).
            let other = &hints[(i + 1) % conns.len()];
            let mut wrong = *other;
            wrong.hash = t.prefetch_hash_in4(k);
            assert_eq!(t.lookup_in4(k, &wrong).map(|f| f.conn_ref()), Some(*c));
            // Reply side: NAT and FULLNAT connections only.
            let out = ConnKeyOut4 {
                proto: k.proto,
                daddr: found_dest(c).0,
                dport: found_dest(c).1,
                addr: c.local().map_or(k.caddr, |l| u32::from(ipv4_of(l))),
                port: c.local().map_or(k.cport, |l| l.port()),
            };
            let mut oh = [LookupHint::NONE; 1];
            t.prefetch_out4(&[out], &mut oh);
            let mut of = [LookupHint::NONE; 1];
            t.prefetch_out4_of(&[(out, 7u8)], |i| i.0, &mut of);
            assert_eq!(of, oh);
            for hint in [&oh[0], &LookupHint::NONE] {
                let general = t.lookup_out(&out.key());
                assert_eq!(t.lookup_out4(&out, hint).map(|f| f.conn_ref()), general);
                assert_eq!(
                    general.is_some(),
                    matches!(m, ForwardMethod::Masq | ForwardMethod::FullNat)
                );
            }
        }
        // Gone after removal, with and without the (now stale) hints.
        for (i, (_, k, c)) in conns.iter().enumerate() {
            assert!(t.remove(c, Time::from_millis(2000)));
            assert_eq!(t.lookup_in4(k, &hints[i]), None);
            assert_eq!(t.lookup_in4(k, &LookupHint::NONE), None);
        }
    }

    fn ipv4_of(s: SocketAddr) -> Ipv4Addr {
        match s.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("IPv4 fixture"),
        }
    }

    fn found_dest(c: &ConnRef) -> (u32, u16) {
        (u32::from(ipv4_of(c.dest_addr())), c.dest_addr().port())
    }

    impl ConnTable {
        /// The client-side hash of `k` (for a hand-made hint).
        fn prefetch_hash_in4(&self, k: &ConnKeyIn4) -> u64 {
            let (want, cv, pw) = k.words();
            hash4(self.seed, cv, pw | want)
        }
    }

    #[test]
    fn an_ipv6_connection_has_no_ipv4_handle() {
        let t = ConnTable::with_capacity(8);
        let dest = Arc::new(DestState::new(0, 0));
        let six = |a: u128, p: u16| SocketAddr::new(IpAddr::V6(a.into()), p);
        let key = ConnKeyIn::new(Protocol::Tcp, six(1, 1000), six(2, 80));
        let nc = NewConn::new(key, ForwardMethod::Masq, six(3, 8080), &dest);
        let c = t.insert(nc, Time::from_millis(1)).expect("room");
        assert_eq!(c.v4(), None);
    }

    #[test]
    fn on_packet4_moves_state_counters_and_deadline_as_on_packet_does() {
        let flags = [
            TcpFlags::SYN,
            TcpFlags::ACK,
            TcpFlags(TcpFlags::ACK.0 | TcpFlags::FIN.0),
            TcpFlags::ACK,
            TcpFlags::RST,
            TcpFlags::ACK,
        ];
        for dir in [Direction::Input, Direction::Output] {
            // Two tables fed the same packets, one through each call.
            let (a, b) = (ConnTable::with_capacity(64), ConnTable::with_capacity(64));
            let (da, db) = (Arc::new(DestState::new(0, 0)), Arc::new(DestState::new(0, 0)));
            let ca = filled(&a, &da);
            let cb = filled(&b, &db);
            for (n, f) in flags.iter().enumerate() {
                let now = Time::from_millis(2000 + 1000 * n as u64);
                for ((_, k, _), (_, _, rb)) in ca.iter().zip(&cb) {
                    let c4 = a.lookup_in4(k, &LookupHint::NONE).expect("live");
                    assert_eq!(c4.conn_ref(), a.lookup_in(&k.key()).expect("live"));
                    let got = a.on_packet4(c4, dir, *f, now);
                    let want = b.on_packet(rb, dir, *f, now);
                    assert_eq!(got, want, "{f:?} {dir:?}");
                }
                assert_eq!(da.active_conns(), db.active_conns());
                assert_eq!(da.inactive_conns(), db.inactive_conns());
                let (la, lb): (Vec<_>, Vec<_>) = (a.iter(now).collect(), b.iter(now).collect());
                assert_eq!(la, lb);
            }
            // A stale handle does nothing.
            let (_, k, c) = &ca[0];
            let c4 = a.lookup_in4(k, &LookupHint::NONE).expect("live");
            assert!(a.remove(c, Time::from_millis(9000)));
            assert_eq!(
                a.on_packet4(c4, dir, TcpFlags::ACK, Time::from_millis(9000)),
                None
            );
        }
    }
}
