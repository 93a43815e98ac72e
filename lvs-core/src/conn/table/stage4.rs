//! Inserting an IPv4 connection in two steps, for a burst of new connections: [`ConnTable::stage4`]
//! takes a slot, writes the connection into it and accounts it in its destination (so the
//! scheduler's next pick sees it, exactly as after [`ConnTable::insert`]), and asks for the
//! cache line of the server-side index bucket; [`ConnTable::commit4`], later in the same
//! burst, makes it findable (publish, both indexes, the duplicate check). Between the two,
//! the bucket arrives while the caller schedules and rewrites the burst's other packets,
//! instead of the insert waiting for it.
//!
//! A staged connection is invisible to every lookup, on every thread, until it is committed:
//! the caller must commit it before any frame that could belong to it is looked up (a
//! later packet of the same flow in the burst, or anything leaving the burst) and before
//! the rewritten frame is sent. [`ConnTable::insert`] of an IPv4 connection runs the same
//! two halves back to back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Conn4, ConnKeyIn4, Direction, LookupHint, NIL, TableDir, TcpFlags, tcp_next};
use super::{
    ConnRef, ConnTable, HAS_OUT, KEY_MASK, L_PENDING, OUT_SEED, TableFull, TemplateRef, begin_write,
    class_of, gen_of, hash4, line_addr, next_live, publish, read_begin,
};
use crate::conn::prefetch::fetch;
use crate::dest::{DestState, ForwardMethod};
use crate::service::Protocol;
use crate::time::Time;

/// A new IPv4 connection for [`ConnTable::stage4`]: [`NewConn`](super::NewConn) with its
/// addresses as their 32 bits (host order) and no persistence template.
#[derive(Debug, Clone, Copy)]
pub struct NewConn4<'a> {
    /// Client-side key of the first packet.
    pub key: ConnKeyIn4,
    /// Forwarding method of the chosen destination.
    pub method: ForwardMethod,
    /// Real server address and port (port = the packet's own for a port-0 destination).
    pub dest_addr: (u32, u16),
    /// FULLNAT's local address and port; ignored for the other methods.
    pub local: (u32, u16),
    /// The destination's live state, whose counters this connection is accounted in.
    pub dest: &'a Arc<DestState>,
}

/// A connection written to its slot and accounted in its destination but not yet findable;
/// give it to [`ConnTable::commit4`] (dropping it instead leaks its slot until restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a staged connection must be committed"]
pub struct Staged4 {
    /// The connection as it will be once committed.
    conn: Conn4,
    /// Client-side hash.
    hin: u64,
    /// Server-side hash (NAT and FULLNAT).
    hout: u64,
    /// The first packet's flags if its state change is left to the commit.
    later: Option<TcpFlags>,
}

impl Staged4 {
    /// The connection as it will be once committed: what the first packet's rewrite reads.
    #[inline(always)]
    pub fn conn(&self) -> Conn4 {
        self.conn
    }

    /// True if `c` is this connection (the same slot and generation): what
    /// [`ConnTable::commit4`] answers unless another entry of the key won a duplicate race.
    #[inline(always)]
    pub fn is(&self, c: &Conn4) -> bool {
        c.idx() == self.conn.idx() && gen_of(c.ctl()) == gen_of(self.conn.ctl())
    }

    /// True if this is the connection of client-side key `k` (a later packet of the same
    /// flow must not be looked up before this is committed).
    #[inline(always)]
    pub fn is_key(&self, k: &ConnKeyIn4) -> bool {
        let (want, cv, pw) = k.words();
        self.conn.cv() == cv && self.conn.ports() & 0xffff_ffff == pw && self.conn.ctl() & KEY_MASK == want
    }
}

/// Table capacity taken ahead, in one step, for a burst's new connections
/// ([`ConnTable::reserve_burst`]): a [`ConnTable::stage4`] given it uses one of its units instead of
/// taking its own; [`ConnTable::unreserve`] gives back what is left. Until then the units
/// count as live entries (as an insert's own unit does while it is under way).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    left: u32,
}

impl Reservation {
    /// Units not used yet.
    pub fn left(&self) -> u32 {
        self.left
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Units dropped unused would stay counted as live entries for good.
        if !std::thread::panicking() {
            debug_assert_eq!(self.left, 0, "a reservation dropped without `unreserve`");
        }
    }
}

/// Everything an insert of an IPv4 connection computes before it takes a slot.
pub(super) struct Fresh4<'a> {
    /// Control word fields below the generation (kind, state, destination id).
    pub(super) fields: u64,
    /// The first state's timeout, in milliseconds.
    pub(super) timeout_ms: u64,
    /// client | virtual << 32.
    pub(super) cv: u64,
    /// destination | FULLNAT local << 32.
    pub(super) dl: u64,
    /// cport | vport << 16 | dport << 32 | lport << 48.
    pub(super) ports: u64,
    pub(super) hin: u64,
    pub(super) hout: u64,
    pub(super) dest: &'a Arc<DestState>,
    pub(super) template: Option<TemplateRef>,
}

/// How [`ConnTable::publish4`] ended.
pub(super) enum Published {
    /// The key's connection: the published one, or the one that won a duplicate race.
    Conn(ConnRef),
    /// The published entry was killed by a concurrent duplicate resolution and no survivor
    /// was found: the insert may be retried.
    Vanished,
}

impl ConnTable {
    /// The words, hashes and first state of a new IPv4 connection (`ra`, `rp`: where its
    /// replies go, the client or the FULLNAT local address).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn fresh4<'a>(
        &self,
        kind: (u64, super::ConnState),
        dest: &'a Arc<DestState>,
        cv: u64,
        dl: u64,
        ports: u64,
        hin: Option<u64>,
        template: Option<TemplateRef>,
    ) -> Fresh4<'a> {
        let (bits, state) = kind;
        let fields = bits | (dest.id() as u64 & super::NCTL_MASK);
        let pw = ports & 0xffff_ffff;
        let hin = hin.unwrap_or_else(|| hash4(self.seed, cv, pw | (fields & KEY_MASK)));
        // The server side's key: the reply goes to the FULLNAT local address, else to the
        // client (as `entry_hash_out`).
        let (ra, rp) = if fields & super::METHOD_MASK == super::method_bits(ForwardMethod::FullNat) {
            (dl >> 32, ports >> 48)
        } else {
            (cv & 0xffff_ffff, ports & 0xffff)
        };
        let hout = hash4(
            self.seed ^ OUT_SEED,
            (dl & 0xffff_ffff) | ra << 32,
            (ports >> 32 & 0xffff) | rp << 16 | (fields & (super::AF6 | super::PROTO_MASK)),
        );
        Fresh4 {
            fields,
            timeout_ms: self.timeouts.millis(state),
            cv,
            dl,
            ports,
            hin,
            hout,
            dest,
            template,
        }
    }

    /// The first half of an IPv4 insert: takes a slot, writes the connection, links its
    /// template and accounts it in its destination. Not yet findable.
    #[inline(always)]
    pub(super) fn write4(&self, f: &Fresh4<'_>, reserved: &mut u32, now: Time) -> Result<Staged4, TableFull> {
        let idx = self.alloc_reserved(reserved)?;
        let e = &self.narrow[idx as usize];
        let old = begin_write(&e.ctl);
        // The read-modify-writes first: each one waits for the stores before it, and the
        // slot's line may still be on its way.
        if self.dests.acquire(f.dest).is_err() {
            self.unalloc(idx);
            return Err(TableFull);
        }
        let aux = f.template.map_or(0, |t| self.acquire_template(&t, now));
        let ctl = next_live(old, f.fields);
        f.dest.bind(class_of(ctl));
        e.cv.store(f.cv, Ordering::Relaxed);
        e.dl.store(f.dl, Ordering::Relaxed);
        e.ports.store(f.ports, Ordering::Relaxed);
        e.deadline
            .store(now.as_millis() + f.timeout_ms, Ordering::Relaxed);
        e.aux.store(aux, Ordering::Relaxed);
        e.link.store(L_PENDING, Ordering::Relaxed);
        Ok(Staged4 {
            conn: Conn4::from_words(idx, ctl, f.cv, f.dl, f.ports),
            hin: f.hin,
            hout: f.hout,
            later: None,
        })
    }

    /// An IPv4 slot, on one of the `reserved` units of capacity if there is one, else as
    /// [`alloc`](Self::alloc) takes it.
    #[inline(always)]
    fn alloc_reserved(&self, reserved: &mut u32) -> Result<u32, TableFull> {
        if *reserved != 0 {
            *reserved -= 1;
            if let Some(i) = self.free4.pop(|i| &self.narrow[i as usize].gc_next) {
                return Ok(i);
            }
            // No spare slot: the unit goes back, and `alloc` recycles or refuses.
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.alloc(false)
    }

    /// Takes up to `n` units of capacity for new connections in one step (fewer if the table
    /// has less room), adding them to `r`.
    pub fn reserve_burst(&self, n: u32, r: &mut Reservation) {
        if n == 0 {
            return;
        }
        let before = self.live.fetch_add(n as u64, Ordering::AcqRel);
        let room = (self.capacity as u64).saturating_sub(before).min(n as u64);
        if room < n as u64 {
            self.live.fetch_sub(n as u64 - room, Ordering::AcqRel);
        }
        r.left += room as u32;
    }

    /// Gives back the units of `r` not used.
    pub fn unreserve(&self, r: &mut Reservation) {
        if r.left != 0 {
            self.live.fetch_sub(r.left as u64, Ordering::AcqRel);
            r.left = 0;
        }
    }

    /// The second half of an IPv4 insert: [`link4`](Self::link4), the pending list,
    /// [`settle4`](Self::settle4).
    #[inline(always)]
    pub(super) fn publish4(&self, s: &Staged4, now: Time) -> Result<Published, TableFull> {
        let linked = self.link4(s, now);
        let idx = s.conn.idx();
        self.pending.push(idx, &self.narrow[idx as usize].gc_next);
        linked?;
        self.stats.inserted.fetch_add(1, Ordering::Relaxed);
        Ok(self.settle4(s, now))
    }

    /// Publishes a written entry and files it in both indexes. Refused (the entry killed
    /// again and counted) if an index is full, which the capacity bound prevents. The entry
    /// still goes on the pending list either way (the caller's part).
    #[inline(always)]
    fn link4(&self, s: &Staged4, now: Time) -> Result<(), TableFull> {
        publish(&self.narrow[s.conn.idx() as usize].ctl, s.conn.ctl());
        self.index4(s, now)
    }

    /// The index half of [`link4`](Self::link4), once the entry is published.
    #[inline(always)]
    fn index4(&self, s: &Staged4, now: Time) -> Result<(), TableFull> {
        let idx = s.conn.idx();
        let ctl = s.conn.ctl();
        let ok_in = self.in_ix.insert(s.hin, idx);
        let ok_out = ctl & HAS_OUT == 0 || self.out_ix.insert(s.hout, idx);
        if !(ok_in && ok_out) {
            return Err(self.insert_failed(idx, gen_of(ctl), now));
        }
        // Killed between the publish and the index inserts (a full table's SYN_RECV reclaim,
        // a duplicate settle)? Its killer found nothing to unlink, so this side does: the
        // slot cannot be recycled before it reaches the pending list, after this. (The index
        // CASes and this load are SeqCst, as are the killer's retire and its index loads:
        // one of the two sides sees the other.)
        if gen_of(self.narrow[idx as usize].ctl.load(Ordering::SeqCst)) != gen_of(ctl) {
            self.in_ix.remove(s.hin, idx);
            if ctl & HAS_OUT != 0 {
                self.out_ix.remove(s.hout, idx);
            }
        }
        Ok(())
    }

    /// The duplicate race of a published entry: if another thread inserted the same key
    /// at the same moment, the lowest slot survives.
    #[inline(always)]
    fn settle4(&self, s: &Staged4, now: Time) -> Published {
        let c = &s.conn;
        let idx = c.idx();
        let e = &self.narrow[idx as usize];
        let gen_ = gen_of(c.ctl());
        let (want, cv, pw) = (c.ctl() & KEY_MASK, c.cv(), c.ports() & 0xffff_ffff);
        let dup = self.in_ix.find(s.hin, |j| {
            if j == idx {
                return None;
            }
            let o = self.narrow.get(j as usize)?;
            self.read_in4(j, o, read_begin(&o.ctl), want, cv, pw)
        });
        if dup.is_none() && gen_of(e.ctl.load(Ordering::Acquire)) == gen_ {
            return Published::Conn(c.conn_ref());
        }
        if let Some(r) = self.settle_duplicate(idx, gen_, dup, now) {
            return Published::Conn(r);
        }
        match self.read_in4(idx, e, read_begin(&e.ctl), want, cv, pw) {
            Some(r) => Published::Conn(r),
            // Killed by a concurrent duplicate resolution: the survivor, if any.
            None => match self.lookup_in4(&c.key_in4(), &LookupHint::NONE) {
                Some(r) => Published::Conn(r.conn_ref()),
                None => Published::Vanished,
            },
        }
    }

    /// Stages a new IPv4 connection: what [`insert`](Self::insert) does up to making it
    /// findable (slot, fields, destination accounting: the scheduler's next pick sees it),
    /// plus a prefetch of the server-side index bucket that [`commit4`](Self::commit4) will
    /// write. `flags` are the first packet's (TCP): its state change is applied as
    /// [`on_packet`](Self::on_packet) would. `hint` is the burst prefetch's hint for the same
    /// key (its hash is reused) or [`LookupHint::NONE`]. The slot counts on a unit of
    /// `reserved` if it has one ([`reserve_burst`](Self::reserve_burst)), else takes its own. Refused
    /// with [`TableFull`] as `insert` is.
    #[inline]
    pub fn stage4(
        &self,
        nc: &NewConn4<'_>,
        flags: TcpFlags,
        hint: &LookupHint,
        reserved: &mut Reservation,
        now: Time,
    ) -> Result<Staged4, TableFull> {
        let (bits, first) = super::NEW_KIND[nc.method as usize][nc.key.proto as usize];
        // The first packet's step from the first state, as `on_packet` takes it (DR and TUN
        // on the input-only table), folded into the new entry when it keeps the
        // connection's class (a SYN: NONE to SYN_RECV, both inactive); else applied by
        // `commit4`, which moves the destination's counters as `on_packet` does.
        let mut kind = (bits, first);
        let mut later = None;
        if nc.key.proto == Protocol::Tcp {
            let td = if bits & super::NOOUTPUT != 0 {
                TableDir::InputOnly
            } else {
                TableDir::Input
            };
            let next = tcp_next(td, flags, first);
            if next.is_active() == first.is_active() {
                kind = (super::with_state(bits, next), next);
            } else {
                later = Some(flags);
            }
        }
        let (l, lport) = if nc.method == ForwardMethod::FullNat {
            nc.local
        } else {
            (0, 0)
        };
        let cv = nc.key.caddr as u64 | (nc.key.vaddr as u64) << 32;
        let dl = nc.dest_addr.0 as u64 | (l as u64) << 32;
        let ports = nc.key.cport as u64
            | (nc.key.vport as u64) << 16
            | (nc.dest_addr.1 as u64) << 32
            | (lport as u64) << 48;
        let f = self.fresh4(kind, nc.dest, cv, dl, ports, hint.hash_if_known(), None);
        debug_assert_eq!(
            f.hin,
            hash4(self.seed, cv, ports & 0xffff_ffff | (f.fields & KEY_MASK)),
            "hint of another key"
        );
        let mut s = self.write4(&f, &mut reserved.left, now)?;
        s.later = later;
        if let Some(pf) = self.prefetcher() {
            if s.conn.ctl() & HAS_OUT != 0 {
                fetch(pf, self.out_ix.home_addr(s.hout));
            }
            // The next slot the free list will hand out: its link is read by the next alloc.
            if let Some(e) = self.narrow.get(self.free4.top() as usize) {
                fetch(pf, line_addr(e));
            }
        }
        Ok(s)
    }

    /// Makes a staged connection findable (see [`stage4`](Self::stage4)) and returns the
    /// key's connection: the staged one, or, if another thread inserted the same key at the
    /// same moment, the one that survived (the lowest slot), as [`insert`](Self::insert)
    /// answers. If both were killed meanwhile, the staged handle (no longer live: packet
    /// calls on it do nothing). Refused with [`TableFull`] (the connection undone and
    /// counted) only if an index is full, which the capacity bound prevents.
    #[inline]
    pub fn commit4(&self, s: Staged4, now: Time) -> Result<Conn4, TableFull> {
        let mut out = Err(TableFull);
        self.commit4_batch([s], now, |_, r| out = r);
        out
    }

    /// [`commit4`](Self::commit4) of several staged connections, in order; `done(i, r)` is
    /// told the answer for the `i`-th. The entries go on the housekeeper's list together
    /// and the table's insert count moves once.
    #[inline]
    pub fn commit4_batch(
        &self,
        staged: impl IntoIterator<Item = Staged4>,
        now: Time,
        mut done: impl FnMut(usize, Result<Conn4, TableFull>),
    ) {
        // The entries are chained through their list links, newest on top, and the chain
        // pushed with one exchange.
        let (mut top, mut bottom, mut linked) = (NIL, None, 0u64);
        for (i, s) in staged.into_iter().enumerate() {
            let r = self.link4(&s, now);
            let e = &self.narrow[s.conn.idx() as usize];
            e.gc_next.store(top, Ordering::Relaxed);
            bottom.get_or_insert(&e.gc_next);
            top = s.conn.idx();
            if r.is_err() {
                done(i, Err(TableFull));
                continue;
            }
            linked += 1;
            let c = match self.settle4(&s, now) {
                Published::Conn(r) => r.v4().unwrap_or(s.conn),
                Published::Vanished => s.conn,
            };
            if let Some(flags) = s.later {
                let _ = self.on_packet4(c, Direction::Input, flags, now);
            }
            done(i, Ok(c));
        }
        if let Some(link) = bottom {
            self.pending.push(top, link);
        }
        if linked != 0 {
            self.stats.inserted.fetch_add(linked, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use super::*;
    use crate::conn::{ConnKeyOut4, ConnState, NewConn};
    use crate::service::Protocol;

    const METHODS: [ForwardMethod; 4] = [
        ForwardMethod::Masq,
        ForwardMethod::DirectRoute,
        ForwardMethod::Tunnel,
        ForwardMethod::FullNat,
    ];
    const PROTOS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    fn v4(a: u32, p: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)
    }

    /// `t.stage4` without a hint or a reservation.
    fn stage(t: &ConnTable, nc: &NewConn4<'_>, flags: TcpFlags, now: Time) -> Result<Staged4, TableFull> {
        t.stage4(nc, flags, &LookupHint::NONE, &mut Reservation::default(), now)
    }

    /// The new connection number `i` of method `m` and protocol `p`, both ways.
    fn new_conn<'a>(
        i: u32,
        m: ForwardMethod,
        p: Protocol,
        dest: &'a Arc<DestState>,
    ) -> (NewConn4<'a>, NewConn<'a>) {
        let nc4 = NewConn4 {
            key: ConnKeyIn4 {
                proto: p,
                caddr: 0x0a00_0100 + i,
                cport: 40000 + i as u16,
                vaddr: 0xc0a8_0001,
                vport: 80,
            },
            method: m,
            dest_addr: (0xac10_0005, 8080),
            local: (0xc0a8_6401, 5000 + i as u16),
            dest,
        };
        let mut nc = NewConn::new(nc4.key.key(), m, v4(0xac10_0005, 8080), dest);
        if m == ForwardMethod::FullNat {
            nc.local = Some(v4(0xc0a8_6401, 5000 + i as u16));
        }
        (nc4, nc)
    }

    /// The server-side key of a staged connection (its replies).
    fn reply_key(nc: &NewConn4<'_>) -> ConnKeyOut4 {
        let (addr, port) = if nc.method == ForwardMethod::FullNat {
            nc.local
        } else {
            (nc.key.caddr, nc.key.cport)
        };
        ConnKeyOut4 {
            proto: nc.key.proto,
            daddr: nc.dest_addr.0,
            dport: nc.dest_addr.1,
            addr,
            port,
        }
    }

    #[test]
    fn stage_then_commit_ends_as_insert_then_on_packet_and_is_invisible_in_between() {
        let firsts = [
            TcpFlags::SYN,
            TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0),
            TcpFlags(TcpFlags::SYN.0 | TcpFlags::FIN.0),
            TcpFlags::ACK,
            TcpFlags::FIN,
            TcpFlags::RST,
            TcpFlags(0),
        ];
        let now = Time::from_millis(5000);
        // Two tables given the same connections, one through each pair of calls.
        let (a, b) = (ConnTable::with_capacity(256), ConnTable::with_capacity(256));
        let (da, db) = (Arc::new(DestState::new(0, 0)), Arc::new(DestState::new(0, 0)));
        let mut i = 0;
        for m in METHODS {
            for p in PROTOS {
                for f in firsts {
                    i += 1;
                    let (nc4, _) = new_conn(i, m, p, &da);
                    let (_, nc) = new_conn(i, m, p, &db);
                    let s = a
                        .stage4(&nc4, f, &LookupHint::NONE, &mut Reservation::default(), now)
                        .expect("room");
                    // Accounted at once (the scheduler's next pick sees it) ...
                    assert_eq!(da.inactive_conns() + da.active_conns(), i);
                    // ... but found by nobody before the commit.
                    assert_eq!(a.lookup_in4(&nc4.key, &LookupHint::NONE), None);
                    assert_eq!(a.lookup_in(&nc4.key.key()), None);
                    assert_eq!(a.lookup_out4(&reply_key(&nc4), &LookupHint::NONE), None);
                    assert!(s.is_key(&nc4.key));
                    let c = a.commit4(s, now).expect("committed");
                    let r = b.insert(nc, now).expect("room");
                    let want = b.on_packet(&r, Direction::Input, f, now).unwrap_or(r.state());
                    assert_eq!(
                        c.state(),
                        a.lookup_in4(&nc4.key, &LookupHint::NONE).expect("found").state()
                    );
                    assert_eq!(c.state(), want, "{m:?} {p:?} {f:?}");
                    let found_out = a.lookup_out4(&reply_key(&nc4), &LookupHint::NONE);
                    assert_eq!(
                        found_out.is_some(),
                        matches!(m, ForwardMethod::Masq | ForwardMethod::FullNat)
                    );
                    assert_eq!(found_out.map(|o| o.conn_ref()), found_out.map(|_| c.conn_ref()));
                }
            }
        }
        assert_eq!(da.active_conns(), db.active_conns());
        assert_eq!(da.inactive_conns(), db.inactive_conns());
        assert_eq!(a.counters(), b.counters());
        let (la, lb): (Vec<_>, Vec<_>) = (a.iter(now).collect(), b.iter(now).collect());
        assert_eq!(la, lb, "states, addresses and deadlines");
        // And they live on alike: the same later packets, the same expiry.
        for (n, f) in [TcpFlags::ACK, TcpFlags(TcpFlags::ACK.0 | TcpFlags::FIN.0)]
            .into_iter()
            .enumerate()
        {
            let t = Time::from_millis(6000 + 1000 * n as u64);
            for x in &la {
                let key = crate::conn::ConnKeyIn::new(x.proto.expect("conn"), x.client, x.virt);
                let (cx, cy) = (a.lookup_in(&key).expect("a"), b.lookup_in(&key).expect("b"));
                assert_eq!(
                    a.on_packet(&cx, Direction::Input, f, t),
                    b.on_packet(&cy, Direction::Input, f, t)
                );
            }
        }
        // The housekeeper starts its wheel at its first call.
        let start = Time::from_millis(8000);
        assert_eq!(a.expire(start, usize::MAX), b.expire(start, usize::MAX));
        let late = Time::from_millis(2_000_000);
        assert_eq!(a.expire(late, usize::MAX), b.expire(late, usize::MAX));
        assert_eq!(a.counters(), b.counters());
        assert_eq!(
            a.len(),
            0,
            "every committed entry reached the housekeeper's wheel"
        );
        assert_eq!((da.active_conns(), da.inactive_conns()), (0, 0));
    }

    #[test]
    fn a_batch_commit_answers_each_in_order_and_a_duplicate_pair_keeps_one_survivor() {
        let t = ConnTable::with_capacity(64);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_millis(1000);
        let mut staged = Vec::new();
        for i in 0..5 {
            let (nc4, _) = new_conn(i, ForwardMethod::Masq, Protocol::Tcp, &d);
            staged.push(stage(&t, &nc4, TcpFlags::SYN, now).expect("room"));
        }
        // The same key staged twice (two workers racing on one SYN): one entry survives and
        // both commits answer with it.
        let (dup, _) = new_conn(2, ForwardMethod::Masq, Protocol::Tcp, &d);
        staged.push(stage(&t, &dup, TcpFlags::SYN, now).expect("room"));
        assert_eq!(t.len(), 6);
        let mut got = Vec::new();
        t.commit4_batch(staged.iter().copied(), now, |i, r| {
            got.push((i, r.expect("committed")))
        });
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(got[5].1, got[2].1, "the duplicate answers with the survivor");
        assert_eq!(got[2].1, staged[2].conn(), "the lowest slot survives");
        assert_eq!(t.len(), 5);
        assert_eq!(t.counters().inserted, 6);
        assert_eq!(t.counters().removed, 1);
        assert_eq!(d.inactive_conns(), 5, "the loser's accounting was released");
        for (i, c) in got.iter().take(5) {
            assert_eq!(c.state(), ConnState::SynRecv);
            assert_eq!(
                t.lookup_in4(&staged[*i].conn().key_in4(), &LookupHint::NONE),
                Some(*c)
            );
        }
        // All of them, the killed one included, reached the housekeeper.
        t.expire(now, usize::MAX);
        assert_eq!(t.expire(Time::from_millis(2_000_000), usize::MAX), 5);
        assert_eq!(t.len(), 0);
        assert_eq!(d.inactive_conns(), 0);
    }

    #[test]
    fn staging_is_refused_on_a_full_table_and_nothing_is_accounted() {
        let t = ConnTable::with_capacity(4);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_millis(1000);
        let mut staged = Vec::new();
        for i in 0..4 {
            let (nc4, _) = new_conn(i, ForwardMethod::Masq, Protocol::Udp, &d);
            staged.push(stage(&t, &nc4, TcpFlags(0), now).expect("room"));
        }
        let (nc4, _) = new_conn(9, ForwardMethod::Masq, Protocol::Udp, &d);
        assert_eq!(stage(&t, &nc4, TcpFlags(0), now), Err(TableFull));
        assert_eq!(t.counters().refused_full, 1);
        assert_eq!(d.inactive_conns() + d.active_conns(), 4);
        t.commit4_batch(staged, now, |_, r| assert!(r.is_ok()));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_reservation_holds_capacity_until_used_or_given_back() {
        let t = ConnTable::with_capacity(4);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_millis(1000);
        // Stages connection `i` (a NAT TCP SYN) on capacity from `r`.
        let stage_on = |i: u32, r: &mut Reservation| {
            let (nc4, _) = new_conn(i, ForwardMethod::Masq, Protocol::Tcp, &d);
            t.stage4(&nc4, TcpFlags::SYN, &LookupHint::NONE, r, now)
        };
        let mut r = Reservation::default();
        // More than the table holds: what fits.
        t.reserve_burst(10, &mut r);
        assert_eq!(r.left(), 4);
        let a = stage_on(1, &mut r).expect("reserved");
        let b = stage_on(2, &mut r).expect("reserved");
        assert_eq!(r.left(), 2);
        // The other two units are held: an insert without them finds the table full.
        let mut none = Reservation::default();
        assert_eq!(stage_on(3, &mut none), Err(TableFull));
        t.unreserve(&mut r);
        assert_eq!(r.left(), 0);
        t.commit4_batch([a, b], now, |_, r| assert!(r.is_ok()));
        assert_eq!(t.len(), 2, "only the used units stay counted");
        assert_eq!(t.counters().inserted, 2);
        let c = stage_on(3, &mut none).expect("room again");
        t.commit4_batch([c], now, |_, r| assert!(r.is_ok()));
        assert_eq!(t.len(), 3);
        assert_eq!(d.inactive_conns(), 3);
    }

    #[test]
    fn an_entry_killed_between_its_publish_and_its_index_inserts_leaves_no_index_slot() {
        // The interleaving a full table's SYN_RECV reclaim can produce: the entry is
        // published (in SYN_RECV), killed before its index inserts (its killer unlinks
        // nothing), then the inserting side files it. That side must take it out again.
        let t = ConnTable::with_capacity(64);
        let d = Arc::new(DestState::new(0, 0));
        let now = Time::from_millis(1000);
        let (nc4, _) = new_conn(7, ForwardMethod::Masq, Protocol::Tcp, &d);
        let s = stage(&t, &nc4, TcpFlags::SYN, now).expect("room");
        let (idx, ctl) = (s.conn.idx(), s.conn.ctl());
        publish(&t.narrow[idx as usize].ctl, ctl);
        assert!(t.kill(idx, gen_of(ctl), Some(now)), "the reclaim's kill");
        t.handoff(idx);
        t.index4(&s, now).expect("room in the indexes");
        let names =
            |ix: &crate::conn::index::Index, h: u64| ix.find(h, |j| (j == idx).then_some(())).is_some();
        assert!(!names(&t.in_ix, s.hin), "client-side index slot left");
        assert!(!names(&t.out_ix, s.hout), "server-side index slot left");
        assert_eq!(t.lookup_in4(&nc4.key, &LookupHint::NONE), None);
        // The slot still comes back through the housekeeper.
        t.pending.push(idx, &t.narrow[idx as usize].gc_next);
        t.expire(now, usize::MAX);
        assert_eq!(t.len(), 0);
        assert_eq!(d.inactive_conns(), 0);
    }
}
