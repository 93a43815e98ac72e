//! A multi-queue interface with fewer workers than queues: every queue must still reach a
//! worker. The lab's veths get two queues with XPS (TX queue i = CPU i), so a client pinned
//! to CPU 1 sends its connections through the director's queue 1; lvs runs one worker.

mod e2e_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

/// `rx_queue_N_xdp_redirect` of the director's eth0 for queues 0 and 1.
fn director_redirects(e: &E2e) -> [u64; 2] {
    let out = e
        .lab
        .exec(&e.lab.director, &["ethtool", "-S", "eth0"])
        .expect("ethtool -S");
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |q: usize| {
        let key = format!("rx_queue_{q}_xdp_redirect:");
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    [get(0), get(1)]
}

/// One HTTP GET of the VIP from the client, run on CPU `cpu`.
fn http_on_cpu(e: &E2e, cpu: usize) -> Result<String, String> {
    let url = format!("http://{}:80/", lab::VIP);
    let cpu = cpu.to_string();
    let out = e
        .lab
        .exec(
            &e.lab.client,
            &["taskset", "-c", &cpu, "curl", "-s", "--max-time", "3", &url],
        )
        .map_err(|err| err.to_string())?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if body.is_empty() {
        Err(format!("no answer from CPU {cpu}"))
    } else {
        Ok(body)
    }
}

fn one_worker_two_queues(backend: &str) {
    let rules = format!(
        "-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {rs0}:8080 -m\n-a -t {vip}:80 -r {rs1}:8080 -m\n",
        vip = lab::VIP,
        rs0 = lab::rs_ip(0),
        rs1 = lab::rs_ip(1)
    );
    let opts = Opts {
        queues: 2,
        ..Opts::default()
    };
    let mut e = E2e::start_with(LabMethod::Nat, 2, backend, &rules, &["--workers", "1"], &opts);
    e.until_ok(|e| http_on_cpu(e, 0));
    let before = director_redirects(&e);
    let mut answers = Vec::new();
    for cpu in [0, 1] {
        for _ in 0..4 {
            let a = http_on_cpu(&e, cpu).unwrap_or_else(|err| panic!("{backend}: {err}"));
            answers.push(who(&a).to_string());
        }
    }
    let after = director_redirects(&e);
    e.stop();
    // rr over the two servers, whichever queue a connection came in on.
    assert_eq!(
        answers.iter().filter(|w| *w == "rs1").count(),
        4,
        "{backend}: {answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|w| *w == "rs2").count(),
        4,
        "{backend}: {answers:?}"
    );
    if backend == "afxdp" {
        // The frames really used both queues (else this test would show nothing).
        for q in 0..2 {
            assert!(
                after[q] > before[q],
                "no frame came in on queue {q}: {before:?} -> {after:?}"
            );
        }
    }
}

#[test]
fn one_worker_serves_both_queues_of_a_two_queue_interface() {
    if !require_root() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test sends from CPU 1 to reach the director's queue 1: it needs 2 CPUs, this machine has {cpus}"
    );
    for backend in ["afxdp", "afpacket"] {
        one_worker_two_queues(backend);
    }
}
