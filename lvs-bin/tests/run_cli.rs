//! `lvs run` refuses bad flags and configuration with a clear message and exit status 2,
//! before anything starts.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lvs"))
        .args(args)
        .output()
        .expect("run lvs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_interface_is_refused_with_the_fix() {
    let (code, err) = run(&["run"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no interface to serve") && err.contains("--iface"),
        "{err}"
    );
}

#[test]
fn unknown_flag_and_bad_backend_are_refused() {
    let (code, err) = run(&["run", "--iface", "eth0", "--bogus"]);
    assert_eq!(code, 2);
    assert!(err.contains("--bogus"), "{err}");
    let (code, err) = run(&["run", "--iface", "eth0", "--backend", "dpdk"]);
    assert_eq!(code, 2);
    assert!(err.contains("dpdk"), "{err}");
}

#[test]
fn bad_config_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("lvs-run-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("lvs.toml");
    std::fs::write(&cfg, "interfaces = [\"eth0\"]\nworkers = \"two\"\n").unwrap();
    let (code, err) = run(&["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("lvs.toml:2:"), "{err}");
    // A rules file with a bad line: refused whole, naming the line, nothing started.
    let rules = dir.join("rules");
    std::fs::write(
        &rules,
        "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.1.1:80 -w 70000\n",
    )
    .unwrap();
    let (code, err) = run(&[
        "run",
        "--iface",
        "lo",
        "--rules",
        rules.to_str().unwrap(),
        "--socket",
        "/nonexistent/x.sock",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2") && err.contains("weight"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_afpacket_ring_is_refused_from_flag_and_file() {
    let (code, err) = run(&["run", "--iface", "eth0", "--afpacket-ring", "v4"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("v4") && err.contains("v2") && err.contains("v3"),
        "names the bad value and the valid ones: {err}"
    );
    let dir = std::env::temp_dir().join(format!("lvs-run-cli-ring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("lvs.toml");
    std::fs::write(&cfg, "interfaces = [\"eth0\"]\nafpacket_ring = \"tpacket\"\n").unwrap();
    let (code, err) = run(&["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("lvs.toml:2:") && err.contains("tpacket"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
