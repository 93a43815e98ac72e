//! A self-built network lab in Linux network namespaces: one client, one director and N real
//! servers on one bridged L2 segment, wired as each forwarding method needs. Used by `lvs demo`
//! and the end-to-end tests; everything it creates is removed when the [`Lab`] is dropped.
//!
//! Addressing (IPv4; the director owns the VIP and LIP in userspace, they are not configured
//! in its kernel):
//! - client `10.77.1.10/24`, default route via the director `10.77.1.1`;
//! - director `eth0`: `10.77.1.1/24` and `10.77.2.1/24` (DIP), IP forwarding off;
//! - real server i: `10.77.2.(10+i)/24`;
//! - VIP `10.77.1.100`, LIP `10.77.2.200`.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Forwarding method the real servers are set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMethod {
    /// NAT: real servers route back through the director.
    Nat,
    /// Direct routing: VIP on the real servers' loopback, arp_ignore/arp_announce set.
    DirectRoute,
    /// IP-in-IP: like DR, plus a userspace decapsulator on each real server.
    Tunnel,
    /// FULLNAT: nothing special on the real servers (they answer the LIP).
    FullNat,
}

/// Client address in the lab.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 10);
/// Director address on the client side.
pub const DIRECTOR_CLIENT_SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// Director address on the server side (DIP).
pub const DIP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
/// The virtual IP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
/// The FULLNAT local address.
pub const LIP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 200);

/// The IPv6 VIP of [`Lab::add_ipv6`].
pub const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x100);

/// The IPv6 FULLNAT local address of [`Lab::add_ipv6`].
pub const LIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x200);

/// IPv6 address of real server `i` (0-based) after [`Lab::add_ipv6`].
pub fn rs_ip6(i: usize) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// Address of real server `i` (0-based).
pub fn rs_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 2, 10 + i as u8)
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running lab. Dropping it kills the processes it started and deletes its namespaces.
pub struct Lab {
    prefix: String,
    /// Client namespace name.
    pub client: String,
    /// Director namespace name.
    pub director: String,
    /// Real server namespace names.
    pub servers: Vec<String>,
    switch: String,
    children: Vec<Child>,
    queues: u32,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("servers", &self.servers)
            .finish()
    }
}

/// Runs `ip` (or another tool) and turns a non-zero exit into an error naming the command.
fn run(cmd: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {cmd}: {e} (is it installed?)")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// True when this process may create network namespaces (root or CAP_NET_ADMIN + CAP_SYS_ADMIN).
pub fn have_privileges() -> bool {
    // The effective uid is the third field of the Uid: line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// For tests that need root: true when privileged; otherwise fails loudly, unless
/// `LVS_SKIP_PRIVILEGED=1` says skipping is intended (then prints SKIPPED and returns false).
pub fn require_root() -> bool {
    if have_privileges() {
        return true;
    }
    if std::env::var("LVS_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED: needs root to create network namespaces (LVS_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!(
        "this test needs root to create network namespaces; run as root or set LVS_SKIP_PRIVILEGED=1 to skip"
    );
}

impl Lab {
    /// Builds the lab for `method` with `n_servers` real servers.
    pub fn build(method: LabMethod, n_servers: usize) -> io::Result<Lab> {
        Self::build_with_queues(method, n_servers, 1)
    }

    /// [`Lab::build`] with `queues` RX/TX queues on every veth (so a multi-queue receiver,
    /// e.g. several AF_XDP workers, can be tried).
    pub fn build_with_queues(method: LabMethod, n_servers: usize, queues: u32) -> io::Result<Lab> {
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        // Short prefix: interface names are limited to 15 bytes.
        let prefix = format!("lvs{}x{}", std::process::id() % 100_000, seq);
        let mut lab = Lab {
            client: format!("{prefix}-cl"),
            director: format!("{prefix}-dir"),
            servers: (0..n_servers).map(|i| format!("{prefix}-rs{}", i + 1)).collect(),
            switch: format!("{prefix}-sw"),
            prefix,
            children: Vec::new(),
            queues: queues.clamp(1, 64),
        };
        // On error, `lab` is dropped here and removes whatever was created.
        lab.wire(method)?;
        Ok(lab)
    }

    fn hosts(&self) -> Vec<String> {
        let mut v = vec![self.client.clone(), self.director.clone()];
        v.extend(self.servers.iter().cloned());
        v
    }

    fn wire(&mut self, method: LabMethod) -> io::Result<()> {
        run("ip", &["netns", "add", &self.switch])?;
        run(
            "ip",
            &["-n", &self.switch, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &self.switch, "link", "set", "br0", "up"])?;
        for (i, ns) in self.hosts().iter().enumerate() {
            run("ip", &["netns", "add", ns])?;
            let a = format!("{}a{i}", self.prefix);
            let b = format!("{}b{i}", self.prefix);
            let port = format!("p{i}");
            let q = self.queues.to_string();
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &a,
                    "numtxqueues",
                    &q,
                    "numrxqueues",
                    &q,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &b,
                    "numtxqueues",
                    &q,
                    "numrxqueues",
                    &q,
                ],
            )?;
            run("ip", &["link", "set", &a, "netns", ns])?;
            run("ip", &["-n", ns, "link", "set", &a, "name", "eth0"])?;
            run("ip", &["link", "set", &b, "netns", &self.switch])?;
            run("ip", &["-n", &self.switch, "link", "set", &b, "name", &port])?;
            run(
                "ip",
                &["-n", &self.switch, "link", "set", &port, "master", "br0", "up"],
            )?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            // Userspace forwarding on veth needs complete checksums and MTU-sized frames.
            run(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off", "rx", "off", "tso", "off",
                    "gso", "off", "gro", "off",
                ],
            )?;
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.switch,
                    "ethtool",
                    "-K",
                    &port,
                    "tx",
                    "off",
                    "rx",
                    "off",
                    "tso",
                    "off",
                    "gso",
                    "off",
                    "gro",
                    "off",
                ],
            )?;
        }
        let c = self.client.clone();
        run(
            "ip",
            &["-n", &c, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"],
        )?;
        run(
            "ip",
            &[
                "-n",
                &c,
                "route",
                "add",
                "default",
                "via",
                &DIRECTOR_CLIENT_SIDE_IP.to_string(),
            ],
        )?;
        let d = self.director.clone();
        run(
            "ip",
            &[
                "-n",
                &d,
                "addr",
                "add",
                &format!("{DIRECTOR_CLIENT_SIDE_IP}/24"),
                "dev",
                "eth0",
            ],
        )?;
        run(
            "ip",
            &["-n", &d, "addr", "add", &format!("{DIP}/24"), "dev", "eth0"],
        )?;
        sysctl(&d, "net.ipv4.ip_forward", "0")?;
        for (i, ns) in self.servers.clone().iter().enumerate() {
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/24", rs_ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            match method {
                LabMethod::Nat => {
                    run(
                        "ip",
                        &["-n", ns, "route", "add", "default", "via", &DIP.to_string()],
                    )?;
                }
                LabMethod::FullNat => {}
                LabMethod::DirectRoute | LabMethod::Tunnel => {
                    run(
                        "ip",
                        &["-n", ns, "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
                    )?;
                    sysctl(ns, "net.ipv4.conf.all.arp_ignore", "1")?;
                    sysctl(ns, "net.ipv4.conf.all.arp_announce", "2")?;
                    sysctl(ns, "net.ipv4.conf.eth0.arp_ignore", "1")?;
                    sysctl(ns, "net.ipv4.conf.eth0.arp_announce", "2")?;
                    // Replies go straight to the client, on the same L2 segment.
                    run("ip", &["-n", ns, "route", "add", "10.77.1.0/24", "dev", "eth0"])?;
                    if method == LabMethod::Tunnel {
                        sysctl(ns, "net.ipv4.conf.all.rp_filter", "0")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds the IPv6 plan to a lab built for `method`: client `fd00:1::10/64` (default via the
    /// director's `fd00:1::1`), director `fd00:1::1/64` and `fd00:2::1/64`, real server i
    /// `fd00:2::(10+i)/64`; VIP6 `fd00:1::100`, LIP6 `fd00:2::200` (both owned by lvs, not the
    /// director's kernel). NAT servers route back via `fd00:2::1`; DR/TUN servers carry VIP6 on
    /// their loopback (Linux answers neighbour solicitations only for addresses of the receiving
    /// interface, so no arp_ignore equivalent is needed) and reach the client on-link. No
    /// duplicate address detection (`nodad`), so the addresses work at once.
    pub fn add_ipv6(&self, method: LabMethod) -> io::Result<()> {
        let addr = |ns: &str, a: &str, dev: &str| {
            run("ip", &["-n", ns, "-6", "addr", "add", a, "dev", dev, "nodad"])
        };
        let route = |ns: &str, args: &[&str]| {
            let mut full = vec!["-n", ns, "-6", "route", "add"];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        let c = &self.client;
        sysctl(c, "net.ipv6.conf.all.disable_ipv6", "0")?;
        addr(c, "fd00:1::10/64", "eth0")?;
        route(c, &["default", "via", "fd00:1::1"])?;
        let d = &self.director;
        addr(d, "fd00:1::1/64", "eth0")?;
        addr(d, "fd00:2::1/64", "eth0")?;
        for (i, ns) in self.servers.iter().enumerate() {
            addr(ns, &format!("{}/64", rs_ip6(i)), "eth0")?;
            match method {
                LabMethod::Nat => route(ns, &["default", "via", "fd00:2::1"])?,
                LabMethod::FullNat => continue,
                LabMethod::DirectRoute | LabMethod::Tunnel => {
                    addr(ns, &format!("{VIP6}/128"), "lo")?;
                    route(ns, &["fd00:1::/64", "dev", "eth0"])?
                }
            };
        }
        Ok(())
    }

    /// XPS on every multi-queue interface of the lab: TX queue i belongs to CPU i (mod the
    /// CPU count), so a frame keeps to the queue of the CPU that sent or forwarded it, as a
    /// NIC's RSS would spread flows. Without it every bridged TCP connection lands on the
    /// director's queue 0.
    pub fn steer_queues_by_cpu(&self) -> io::Result<()> {
        let script = "n=$(nproc); for d in /sys/class/net/*/queues; do \
             [ -e $d/tx-1 ] || continue; i=0; \
             while [ -e $d/tx-$i/xps_cpus ]; do \
             printf '%x' $((1 << (i % n))) > $d/tx-$i/xps_cpus || exit 1; i=$((i + 1)); done; done";
        for ns in self.namespaces() {
            self.exec(&ns, &["sh", "-c", script])?;
        }
        Ok(())
    }

    /// Runs a command inside namespace `ns` and waits for it.
    pub fn exec(&self, ns: &str, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Starts a command inside namespace `ns`; it is killed when the lab is dropped.
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str]) -> io::Result<u32> {
        self.spawn_with(ns, program, args, Stdio::null(), Stdio::inherit())
    }

    fn spawn_with(
        &mut self,
        ns: &str,
        program: &str,
        args: &[&str],
        out: Stdio,
        err: Stdio,
    ) -> io::Result<u32> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts a command inside namespace `ns` with its stdout and stderr appended to `log`;
    /// it is killed when the lab is dropped.
    pub fn spawn_logged(
        &mut self,
        ns: &str,
        program: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> io::Result<u32> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        self.spawn_with(ns, program, args, out.try_clone()?.into(), out.into())
    }

    /// Sends SIGTERM to process `pid` started by this lab and waits up to `timeout` for it
    /// to exit; returns its exit status (None if it had to be killed).
    pub fn terminate(&mut self, pid: u32, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let pos = self.children.iter().position(|c| c.id() == pid)?;
        let mut c = self.children.remove(pos);
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Kills process `pid` started with [`Lab::spawn`].
    pub fn kill(&mut self, pid: u32) {
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(pos);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Names of every namespace this lab created.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = self.hosts();
        v.push(self.switch.clone());
        v
    }
}

fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ],
    )
    .map(|_| ())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces() {
            // Deleting a namespace removes its veth ends and bridge with it.
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Namespace names currently present on the host that start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> io::Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}
