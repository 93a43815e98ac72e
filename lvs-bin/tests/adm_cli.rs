//! The real `lvs` binary as an operator runs it: `lvs adm …` and a `lvsadm` symlink talking to
//! a control plane on a temporary socket (in this process, or `lvs control-only` as a child),
//! with ipvsadm's listing text, stdout/stderr split and exit statuses.

use lvs_core::stats::StatsWriter;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lvs_bin::adm::{ControlPlane, serve};
use lvs_bin::control::ControlServer;
use lvs_core::conn::ConnTable;
use lvs_core::{ServiceTable, Time};

const LVS: &str = env!("CARGO_BIN_EXE_lvs");

struct Daemon {
    dir: PathBuf,
    sock: PathBuf,
    services: Arc<ServiceTable>,
    conns: Arc<ConnTable>,
    _server: ControlServer,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("lvs-adm-cli-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("run").join("lvs.sock");
        let services = Arc::new(ServiceTable::new());
        let conns = Arc::new(ConnTable::with_capacity(1024));
        let ms = Arc::new(AtomicU64::new(0));
        let plane = ControlPlane::new(services.clone(), conns.clone(), move || {
            Time::from_millis(ms.load(Ordering::Relaxed))
        });
        let server = serve(Arc::new(Mutex::new(plane)), &sock).unwrap();
        Daemon {
            dir,
            sock,
            services,
            conns,
            _server: server,
        }
    }

    /// `lvs adm --socket SOCK args…`
    fn adm(&self, args: &str) -> Output {
        Command::new(LVS)
            .arg("adm")
            .arg("--socket")
            .arg(&self.sock)
            .args(args.split_whitespace())
            .env_remove("LVS_SOCKET")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A `lvsadm` symlink to the binary, in the daemon's temp dir.
    fn lvsadm_path(&self) -> PathBuf {
        let link = self.dir.join("lvsadm");
        if !link.exists() {
            std::os::unix::fs::symlink(LVS, &link).unwrap();
        }
        link
    }

    /// `lvsadm args…` with `LVS_SOCKET` pointing at the daemon, `stdin` fed in.
    fn lvsadm_with(&self, args: &str, stdin: &str) -> Output {
        let mut child = Command::new(self.lvsadm_path())
            .args(args.split_whitespace())
            .env("LVS_SOCKET", &self.sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn lvsadm(&self, args: &str) -> Output {
        self.lvsadm_with(args, "")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// (exit status, stdout, stderr)
fn res(o: &Output) -> (i32, String, String) {
    (o.status.code().unwrap(), text(&o.stdout), text(&o.stderr))
}

fn ok(o: Output) -> String {
    let (code, out, err) = res(&o);
    assert_eq!((code, err.as_str()), (0, ""), "stdout: {out}");
    out
}

const LISTING: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.10:80 wrr persistent 300
  -> 10.1.0.1:80                  Route   3      0          0         
  -> 10.1.0.2:80                  Route   1      0          0         
TCP  192.0.2.10:443 lc
  -> 10.1.0.3:8443                Masq    2      0          0         
UDP  192.0.2.11:53 dh
  -> 10.1.0.4:53                  Tunnel  1      0          0         
";

#[test]
fn lvs_adm_and_lvsadm_drive_the_daemon() {
    let d = Daemon::start("drive");
    for line in [
        "-A -t 192.0.2.10:80 -s wrr -p",
        "-A -t 192.0.2.10:443 -s lc",
        "-A -u 192.0.2.11:53 -s dh",
    ] {
        assert_eq!(ok(d.adm(line)), "", "{line}");
    }
    for line in [
        "-a -t 192.0.2.10:80 -r 10.1.0.1 -w 3",
        "-a -t 192.0.2.10:80 -r 10.1.0.2:80 -g",
        "-a -t 192.0.2.10:443 -r 10.1.0.3:8443 -m",
        "-a -u 192.0.2.11:53 -r 10.1.0.4 -i",
        "-a -u 192.0.2.11:53 -r 10.1.0.5 -i",
        "-e -t 192.0.2.10:443 -r 10.1.0.3:8443 -m -w 2",
        "-d -u 192.0.2.11:53 -r 10.1.0.5",
    ] {
        assert_eq!(ok(d.lvsadm(line)), "", "{line}");
    }
    assert_eq!(ok(d.adm("-L -n")), LISTING);
    assert_eq!(ok(d.lvsadm("-Ln")), LISTING);
    // No argument at all lists too.
    assert_eq!(ok(d.lvsadm("")), LISTING);
    assert_eq!(
        d.services.load().services().len(),
        3,
        "published to the packet path"
    );

    // Errors: stderr only, ipvsadm's words and statuses.
    let cases: &[(&str, i32, &str)] = &[
        ("-a -t 192.0.2.99:80 -r 10.1.0.1", 255, "Service not defined\n"),
        (
            "-a -t 192.0.2.10:80 -r 10.1.0.1",
            255,
            "Destination already exists\n",
        ),
        ("--bogus", 255, "--bogus: unknown option\n"),
        ("-L -n -t 192.0.2.99:80", 1, "No such service\n"),
        (
            "-A -t 192.0.2.12",
            2,
            "Zero port specified for non-persistent service\n",
        ),
    ];
    for &(line, code, msg) in cases {
        assert_eq!(
            res(&d.adm(line)),
            (code, String::new(), msg.to_string()),
            "lvs adm {line}"
        );
        assert_eq!(
            res(&d.lvsadm(line)),
            (code, String::new(), msg.to_string()),
            "lvsadm {line}"
        );
    }
    assert_eq!(ok(d.adm("-L -n")), LISTING, "failed commands changed nothing");
}

#[test]
fn restore_reads_stdin_all_or_nothing() {
    let d = Daemon::start("restore");
    ok(d.adm("-A -t 192.0.2.20:80 -s rr"));
    ok(d.adm("-a -t 192.0.2.20:80 -r 10.2.0.1:80 -m"));
    let before = ok(d.adm("-S -n"));
    let bad = "-A -t 192.0.2.21:80 -s rr\n-a -t 192.0.2.21:80 -r 10.2.0.9:80 -m\n-a -t 192.0.2.20:80 -r 10.2.0.1:80 -m\n";
    let (code, out, err) = res(&d.lvsadm_with("-R", bad));
    assert_eq!((code, out.as_str()), (255, ""));
    assert!(err.starts_with("Destination already exists\n"), "{err}");
    assert!(
        err.contains("line 3: -a -t 192.0.2.20:80 -r 10.2.0.1:80 -m"),
        "{err}"
    );
    assert_eq!(
        ok(d.adm("-S -n")),
        before,
        "the earlier rules stay, nothing of the file applied"
    );

    // An ipvsadm-save file from elsewhere restores whole, through `lvs adm` reading stdin.
    let save = "-A -t 192.0.2.21:80 -s sed\n-a -t 192.0.2.21:80 -r 10.2.0.9:80 -m -w 4\n-A -u 192.0.2.21:53 -s nq\n-a -u 192.0.2.21:53 -r 10.2.0.10:53 -m -w 1\n";
    let mut child = Command::new(LVS)
        .args(["adm", "--socket"])
        .arg(&d.sock)
        .arg("--restore")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(save.as_bytes()).unwrap();
    assert_eq!(ok(child.wait_with_output().unwrap()), "");
    assert_eq!(ok(d.adm("-S -n")), format!("{before}{save}"));
}

#[test]
fn stdin_is_read_only_for_restore() {
    let d = Daemon::start("stdin");
    // stdin stays open and empty: a client that read it would hang here.
    let mut child = Command::new(d.lvsadm_path())
        .args(["-L", "-n"])
        .env("LVS_SOCKET", &d.sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "lvsadm -L waited for stdin"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(ok(out).starts_with("IP Virtual Server version 1.2.1 (size=4096)\n"));
}

#[test]
fn zero_set_and_timeout_listing_through_the_binary() {
    let d = Daemon::start("zero");
    ok(d.adm("-A -t 192.0.2.30:80 -s rr"));
    ok(d.adm("-a -t 192.0.2.30:80 -r 10.3.0.1:80 -m"));
    let svc = d.services.load().services()[0].clone();
    svc.stats.add_in(&StatsWriter::shared(), 7, 700);
    assert!(
        ok(d.adm("-L -n --stats"))
            .contains("TCP  192.0.2.30:80                       0        7        0      700        0\n")
    );
    assert_eq!(ok(d.lvsadm("-Z")), "");
    assert!(
        ok(d.adm("-L -n --stats"))
            .contains("TCP  192.0.2.30:80                       0        0        0        0        0\n")
    );
    assert_eq!(ok(d.lvsadm("--set 3600 60 120")), "");
    assert_eq!(
        ok(d.adm("-L --timeout")),
        "Timeout (tcp tcpfin udp): 3600 60 120\n"
    );
    assert_eq!(d.conns.timeouts().get(), (3600, 60, 120));
}

#[test]
fn socket_is_private_and_unreachable_daemon_is_reported() {
    let d = Daemon::start("sock");
    let mode = fs::metadata(&d.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket must be 0600");

    let missing = d.dir.join("nowhere.sock");
    let o = Command::new(LVS)
        .args(["adm", "--socket"])
        .arg(&missing)
        .args(["-L", "-n"])
        .output()
        .unwrap();
    let (code, out, err) = res(&o);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.starts_with("Can't initialize ipvs: "), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");

    // --socket wins over LVS_SOCKET.
    let o = Command::new(LVS)
        .args(["adm", "--socket"])
        .arg(&d.sock)
        .args(["-L", "-n"])
        .env("LVS_SOCKET", &missing)
        .output()
        .unwrap();
    assert!(ok(o).starts_with("IP Virtual Server"));
    // lvsadm accepts a leading --socket too.
    let o = Command::new(d.lvsadm_path())
        .arg("--socket")
        .arg(&d.sock)
        .arg("-Ln")
        .env("LVS_SOCKET", &missing)
        .output()
        .unwrap();
    assert!(ok(o).starts_with("IP Virtual Server"));
}

#[test]
fn help_and_version_answer_without_a_daemon() {
    let dir = std::env::temp_dir().join(format!("lvs-adm-cli-{}-help", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let link = dir.join("lvsadm");
    std::os::unix::fs::symlink(LVS, &link).unwrap();
    let o = Command::new(&link)
        .arg("-h")
        .env("LVS_SOCKET", dir.join("none.sock"))
        .output()
        .unwrap();
    let h = ok(o);
    assert!(
        h.starts_with("ipvsadm v1.31 2019/12/24 (compiled with lvs "),
        "{h}"
    );
    assert!(h.contains("Usage:\n  lvsadm -A|E virtual-service"), "{h}");
    let o = Command::new(LVS).args(["adm", "-h"]).output().unwrap();
    assert!(ok(o).contains("Usage:\n  lvs adm -A|E virtual-service"));
    let o = Command::new(&link).arg("--version").output().unwrap();
    let v = ok(o);
    assert!(
        v.starts_with("ipvsadm v1.31") && v.ends_with("IPVS v1.2.1)\n") && v.lines().count() == 1,
        "{v}"
    );
    let _ = fs::remove_dir_all(&dir);
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn control_only_subcommand_serves_a_rules_file() {
    let dir = std::env::temp_dir().join(format!("lvs-adm-cli-{}-ctlonly", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules");
    // ipvsadm-save order differs from the sorted -S output: the save sorts.
    fs::write(
        &rules,
        "-A -u 198.51.100.1:53 -s rr\n-a -u 198.51.100.1:53 -r 10.4.0.2:53 -m -w 1\n-A -t 198.51.100.1:80 -s wlc\n-a -t 198.51.100.1:80 -r 10.4.0.1:80 -g -w 1\n",
    )
    .unwrap();
    let sock = dir.join("lvs.sock");
    let mut child = Command::new(LVS)
        .args(["control-only", "--socket"])
        .arg(&sock)
        .arg("--rules")
        .arg(&rules)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock);
    let o = Command::new(LVS)
        .args(["adm", "--socket"])
        .arg(&sock)
        .args(["-S", "-n"])
        .output()
        .unwrap();
    let saved = ok(o);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        saved,
        "-A -t 198.51.100.1:80 -s wlc\n-a -t 198.51.100.1:80 -r 10.4.0.1:80 -g -w 1\n-A -u 198.51.100.1:53 -s rr\n-a -u 198.51.100.1:53 -r 10.4.0.2:53 -m -w 1\n"
    );

    // A bad rules file keeps it from starting, naming the line.
    fs::write(&rules, "-A -t 198.51.100.1\n").unwrap();
    let mut child = Command::new(LVS)
        .args(["control-only", "--socket"])
        .arg(dir.join("other.sock"))
        .arg("--rules")
        .arg(&rules)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("control-only started with a bad rules file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let (code, _, err) = res(&o);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 1: Zero port specified for non-persistent service"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}
