//! Connection states and timeouts: the kernel's TCP state table (`tcp_states` in
//! `net/netfilter/ipvs/ip_vs_proto_tcp.c`), its default timeouts, and the run-time timeout
//! settings of `ipvsadm --set tcp tcpfin udp`.

use std::sync::atomic::{AtomicU32, Ordering};

/// State of a connection, with the names IPVS prints in `ipvsadm -L -c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    /// `NONE`: no packet classified yet (also the state of every template).
    None = 0,
    /// `ESTABLISHED`.
    Established = 1,
    /// `SYN_SENT`.
    SynSent = 2,
    /// `SYN_RECV`: a client SYN seen, handshake not finished.
    SynRecv = 3,
    /// `FIN_WAIT`.
    FinWait = 4,
    /// `TIME_WAIT`.
    TimeWait = 5,
    /// `CLOSE`.
    Close = 6,
    /// `CLOSE_WAIT`.
    CloseWait = 7,
    /// `LAST_ACK`.
    LastAck = 8,
    /// `LISTEN`.
    Listen = 9,
    /// `SYNACK`.
    SynAck = 10,
    /// `UDP`: the single state of UDP connections.
    Udp = 11,
}

/// Number of [`ConnState`] values.
pub const STATES: usize = 12;

impl ConnState {
    /// All states, in discriminant order.
    pub const ALL: [ConnState; STATES] = [
        ConnState::None,
        ConnState::Established,
        ConnState::SynSent,
        ConnState::SynRecv,
        ConnState::FinWait,
        ConnState::TimeWait,
        ConnState::Close,
        ConnState::CloseWait,
        ConnState::LastAck,
        ConnState::Listen,
        ConnState::SynAck,
        ConnState::Udp,
    ];

    /// The state with discriminant `v` (values out of range map to `Close`).
    #[inline]
    pub fn from_u8(v: u8) -> ConnState {
        if v < 16 {
            ConnState::from_nibble(v)
        } else {
            ConnState::Close
        }
    }

    /// The state with discriminant `v & 15` (12 to 15 map to `Close`): one table load.
    #[inline]
    pub(crate) fn from_nibble(v: u8) -> ConnState {
        const BY_NIBBLE: [ConnState; 16] = {
            let mut t = [ConnState::Close; 16];
            let mut i = 0;
            while i < STATES {
                t[i] = ConnState::ALL[i];
                i += 1;
            }
            t
        };
        BY_NIBBLE[(v & 15) as usize]
    }

    /// The name ipvsadm prints in the `state` column.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::None => "NONE",
            ConnState::Established => "ESTABLISHED",
            ConnState::SynSent => "SYN_SENT",
            ConnState::SynRecv => "SYN_RECV",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::Listen => "LISTEN",
            ConnState::SynAck => "SYNACK",
            ConnState::Udp => "UDP",
        }
    }

    /// True for the state counted in the destination's active connections (ESTABLISHED).
    #[inline]
    pub fn is_active(self) -> bool {
        self == ConnState::Established
    }
}

/// Which way a packet travels, as the kernel's `IP_VS_DIR_INPUT` / `IP_VS_DIR_OUTPUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → director (→ real server).
    Input,
    /// Real server → director (→ client): the reply path, seen only for NAT and FULLNAT.
    Output,
}

/// The TCP flags the state machine looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN (0x01).
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN (0x02).
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST (0x04).
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// ACK (0x10).
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// No flag.
    pub const NONE: TcpFlags = TcpFlags(0);

    /// True if every flag of `o` is set.
    #[inline]
    pub fn contains(self, o: TcpFlags) -> bool {
        self.0 & o.0 == o.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | o.0)
    }
}

/// Row of the state table the flags select, by the kernel's priority (`tcp_state_idx`):
/// RST, then SYN, then FIN, then ACK; `None` when none is set.
#[inline]
fn flag_row(f: TcpFlags) -> Option<usize> {
    if f.contains(TcpFlags::RST) {
        Some(3)
    } else if f.contains(TcpFlags::SYN) {
        Some(0)
    } else if f.contains(TcpFlags::FIN) {
        Some(1)
    } else if f.contains(TcpFlags::ACK) {
        Some(2)
    } else {
        None
    }
}

/// The kernel's direction offsets: INPUT, OUTPUT, INPUT-ONLY (DR/TUN, no reply seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableDir {
    Input = 0,
    Output = 1,
    InputOnly = 2,
}

use ConnState as S;
const ES: S = S::Established;
const SS: S = S::SynSent;
const SR: S = S::SynRecv;
const FW: S = S::FinWait;
const TW: S = S::TimeWait;
const CL: S = S::Close;
const CW: S = S::CloseWait;
const LA: S = S::LastAck;
const LI: S = S::Listen;

/// `tcp_states[dir][syn/fin/ack/rst][current]` (the normal table, not `secure_tcp`'s
/// `tcp_states_dos`; it never leads to NONE or SYNACK), columns in the order
/// NONE ES SYN_SENT SYN_RECV FIN_WAIT TIME_WAIT CLOSE CLOSE_WAIT LAST_ACK LISTEN SYNACK.
#[rustfmt::skip]
const TCP_STATES: [[[ConnState; 11]; 4]; 3] = [
    // INPUT
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT-ONLY
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The kernel's `set_tcp_state` transition: next state for a packet with `flags` seen in
/// `dir` by a connection in `cur`. A packet with none of RST/SYN/FIN/ACK moves the
/// connection to CLOSE, as the kernel does.
pub(crate) fn tcp_next(dir: TableDir, flags: TcpFlags, cur: ConnState) -> ConnState {
    let Some(row) = flag_row(flags) else {
        return ConnState::Close;
    };
    let col = cur as usize;
    if col >= 11 {
        return ConnState::Close;
    }
    TCP_STATES[dir as usize][row][col]
}

/// Public form of the transition table, for tests and tools: `no_output` is the kernel's
/// `IP_VS_CONN_F_NOOUTPUT` (DR/TUN connections whose replies bypass the director), which
/// makes input packets use the INPUT-ONLY table.
pub fn tcp_transition(cur: ConnState, dir: Direction, flags: TcpFlags, no_output: bool) -> ConnState {
    let d = match (dir, no_output) {
        (Direction::Output, _) => TableDir::Output,
        (Direction::Input, true) => TableDir::InputOnly,
        (Direction::Input, false) => TableDir::Input,
    };
    tcp_next(d, flags, cur)
}

/// The kernel's default timeout of each state, in seconds (`tcp_timeouts`, `udp_timeouts`).
pub const DEFAULT_TIMEOUTS: [u32; STATES] = [
    2,       // NONE
    15 * 60, // ESTABLISHED
    2 * 60,  // SYN_SENT
    60,      // SYN_RECV
    2 * 60,  // FIN_WAIT
    2 * 60,  // TIME_WAIT
    10,      // CLOSE
    60,      // CLOSE_WAIT
    30,      // LAST_ACK
    2 * 60,  // LISTEN
    120,     // SYNACK
    5 * 60,  // UDP
];

/// Per-state timeouts in seconds, changeable at run time from any thread.
#[derive(Debug)]
pub struct Timeouts {
    secs: [AtomicU32; STATES],
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            secs: DEFAULT_TIMEOUTS.map(AtomicU32::new),
        }
    }
}

impl Timeouts {
    /// Timeout of `state` in milliseconds.
    #[inline]
    pub fn millis(&self, state: ConnState) -> u64 {
        self.secs[state as usize].load(Ordering::Relaxed) as u64 * 1000
    }

    /// Timeout of `state` in seconds.
    pub fn secs(&self, state: ConnState) -> u32 {
        self.secs[state as usize].load(Ordering::Relaxed)
    }

    /// Sets the timeout of one state (seconds, at least 1).
    pub fn set_state(&self, state: ConnState, secs: u32) {
        self.secs[state as usize].store(secs.max(1), Ordering::Relaxed);
    }

    /// `ipvsadm --set tcp tcpfin udp`: ESTABLISHED, FIN_WAIT and UDP timeouts in seconds; a
    /// value of 0 leaves that timeout unchanged, as ipvsadm does.
    pub fn set(&self, tcp: u32, tcpfin: u32, udp: u32) {
        if tcp != 0 {
            self.set_state(ConnState::Established, tcp);
        }
        if tcpfin != 0 {
            self.set_state(ConnState::FinWait, tcpfin);
        }
        if udp != 0 {
            self.set_state(ConnState::Udp, udp);
        }
    }

    /// The `(tcp, tcpfin, udp)` triple `ipvsadm -L --timeout` prints.
    pub fn get(&self) -> (u32, u32, u32) {
        (
            self.secs(ConnState::Established),
            self.secs(ConnState::FinWait),
            self.secs(ConnState::Udp),
        )
    }
}
