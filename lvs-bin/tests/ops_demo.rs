//! `lvs demo` as a newcomer runs it: it forwards real traffic through the lab, shows who
//! answered, exits 0 and leaves no namespace or file behind.

mod e2e_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_support::{lvs, require_root};
use lvs_bin::lab;

/// The last `client: N answers (rs1 a, rs2 b, rs3 c), F failed` line: ([a, b, c], F).
fn client_line(out: &str) -> ([u64; 3], u64) {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("client: "))
        .unwrap_or_else(|| panic!("no client line in the demo's output:\n{out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // "client: N answers (rs1 a, rs2 b, rs3 c), F failed" → N 1 a 2 b 3 c F
    assert_eq!(nums.len(), 8, "unexpected client line {line:?}");
    ([nums[2], nums[4], nums[6]], nums[7])
}

#[test]
fn demo_forwards_traffic_and_removes_the_lab() {
    if !require_root() {
        return;
    }
    let child = Command::new(lvs())
        .args(["demo", "--seconds", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lvs demo");
    // The lab's namespaces are named after the demo's pid.
    let prefix = format!("lvs{}x", child.id() % 100_000);
    let dir = std::env::temp_dir().join(format!("lvs-demo-{}", child.id()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 6 && Instant::now() < deadline {
        seen = lab::namespaces_with_prefix(&prefix).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lvs demo failed: {:?}\n{stderr}\n{stdout}",
        out.status
    );
    // While it ran: client, director, switch and three real servers.
    assert_eq!(seen.len(), 6, "namespaces while the demo ran: {seen:?}");
    // Traffic went through: every server answered, wrr with weights 3, 2, 1.
    let (answers, failed) = client_line(&stdout);
    assert_eq!(failed, 0, "failed requests:\n{stdout}");
    assert!(
        answers[0] > answers[1] && answers[1] > answers[2] && answers[2] > 0,
        "wrr 3:2:1 answers {answers:?}"
    );
    // The live view showed lvs adm's counters for each real server.
    for i in 0..3 {
        assert!(
            stdout.contains(&format!("rs{}  {}:8080", i + 1, lab::rs_ip(i))),
            "no row for rs{}:\n{stdout}",
            i + 1
        );
    }
    let left = lab::namespaces_with_prefix(&prefix).unwrap();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn demo_stops_cleanly_on_sigint() {
    if !require_root() {
        return;
    }
    let child = Command::new(lvs())
        .args(["demo", "--seconds", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lvs demo");
    let prefix = format!("lvs{}x", child.id() % 100_000);
    // Wait until the lab is up and lvs answers (the live view has printed a frame).
    let up = {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut n = 0;
        while n < 6 && Instant::now() < deadline {
            n = lab::namespaces_with_prefix(&prefix).unwrap().len();
            std::thread::sleep(Duration::from_millis(50));
        }
        n == 6
    };
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(up, "the lab did not come up");
    assert!(
        out.status.success(),
        "lvs demo after SIGINT: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("lvs demo: stopped after"), "{stdout}");
    let left = lab::namespaces_with_prefix(&prefix).unwrap();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn demo_refuses_a_non_root_user_with_exit_2() {
    // setpriv (util-linux) drops to nobody; the binary must be reachable for that user.
    let have_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !require_root() || !have_setpriv {
        eprintln!("SKIPPED: needs root and setpriv");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            lvs(),
            "demo",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") && !stderr.contains("lvs demo") {
        eprintln!("SKIPPED: the test binary is not executable by nobody: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

#[test]
fn demo_names_missing_tools_and_their_packages_with_exit_2() {
    if !require_root() {
        return;
    }
    // An empty PATH: none of the lab's tools can be found; nothing is started.
    let empty = std::env::temp_dir().join(format!("lvs-ops-emptypath-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(lvs())
        .args(["demo", "--seconds", "1"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for (tool, pkg) in [("ip", "iproute2"), ("ethtool", "ethtool"), ("sysctl", "procps")] {
        assert!(
            stderr.contains(&format!("`{tool}` (apt-get install {pkg})")),
            "{tool} not named: {stderr}"
        );
    }
}
