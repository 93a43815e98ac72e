//! The namespace lab itself: built, reachable, and gone after drop.

use std::time::{Duration, Instant};

use lvs_bin::lab::{self, Lab, LabMethod, require_root};

#[test]
fn lab_servers_answer_the_director_and_lab_is_removed_on_drop() {
    if !require_root() {
        return;
    }
    let names;
    {
        let mut lab = Lab::build(LabMethod::Nat, 2).expect("build lab");
        names = lab.namespaces();
        let bin = env!("CARGO_BIN_EXE_lvs");
        for (i, ns) in lab.servers.clone().iter().enumerate() {
            let http = format!("{}:8080", lab::rs_ip(i));
            lab.spawn(
                ns,
                bin,
                &["testsrv", "--name", &format!("rs{}", i + 1), "--http", &http],
            )
            .unwrap();
        }
        // From the director (DIP 10.77.2.1), each real server answers with its name and sees
        // the DIP as the client.
        for i in 0..2 {
            let deadline = Instant::now() + Duration::from_secs(5);
            let out = loop {
                let r = lab.exec(
                    &lab.director,
                    &[
                        "bash",
                        "-c",
                        &format!(
                            "exec 3<>/dev/tcp/{}/8080 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
                            lab::rs_ip(i)
                        ),
                    ],
                );
                match r {
                    Ok(o) => break String::from_utf8_lossy(&o.stdout).into_owned(),
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => panic!("rs{} unreachable: {e}", i + 1),
                }
            };
            assert!(
                out.contains(&format!("rs{} {}:", i + 1, lab::DIP)),
                "unexpected answer: {out}"
            );
        }
    }
    let left = lab::namespaces_with_prefix(&names[0][..names[0].find('-').unwrap()]).unwrap();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
