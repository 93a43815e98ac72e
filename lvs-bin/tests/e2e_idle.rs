//! An idle lvs must not burn a core: workers sleep in poll(2) when their rings are empty.

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

/// CPU time (user + system) of process `pid` so far, from /proc/PID/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process alive");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 after the name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn idle_share(backend: &str) -> f64 {
    let rules = format!(
        "-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {rs}:8080 -m\n",
        vip = lab::VIP,
        rs = lab::rs_ip(0)
    );
    let mut e = E2e::start(LabMethod::Nat, 1, backend, &rules, &[]);
    // Some traffic first, so the workers have been busy, then idle.
    e.until_ok(|e| e.http(80));
    std::thread::sleep(Duration::from_millis(300));
    let hz = 100.0; // USER_HZ on Linux
    let t0 = Instant::now();
    let c0 = cpu_ticks(e.lvs_pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = (cpu_ticks(e.lvs_pid) - c0) as f64 / hz;
    let share = used / t0.elapsed().as_secs_f64();
    e.stop();
    share
}

#[test]
fn idle_lvs_uses_under_two_percent_of_a_core() {
    if !require_root() {
        return;
    }
    for backend in ["afxdp", "afpacket"] {
        let share = idle_share(backend);
        eprintln!("idle CPU with {backend}: {:.2}% of a core", share * 100.0);
        assert!(
            share < 0.02,
            "idle lvs ({backend}) used {:.1}% of a core",
            share * 100.0
        );
    }
}
