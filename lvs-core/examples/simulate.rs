//! Dry-runs an ipvsadm-save rules file through lvs's schedulers.
//!
//! `cargo run -p lvs-core --example simulate -- RULES --conns N [--clients K] [--hold]`
//!
//! For each service, schedules N new connections from K clients (default 1; client `i` is
//! 10.200.0.0 + i + 1, source ports counting up from 1024) and prints one line per connection,
//! `CLIENT_IP:PORT -> RS_IP:PORT`, then `total RS_IP:PORT COUNT` per destination. Without
//! `--hold` each connection ends before the next arrives; with `--hold` all stay bound as
//! active connections, so lc/wlc/sed/nq see the load grow. Bad input exits with status 2.

use std::process::ExitCode;

use lvs_core::rules::{SimOptions, simulate};

const USAGE: &str = "usage: simulate RULES --conns N [--clients K] [--hold]";

fn parse_args(args: &[String]) -> Result<(String, SimOptions), String> {
    let mut path = None;
    let mut conns = None;
    let mut opts = SimOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: invalid number `{v}'"))
        };
        match a.as_str() {
            "--conns" => conns = Some(value("--conns")? as usize),
            "--clients" => {
                let k = value("--clients")?;
                if k == 0 || k > u32::MAX as u64 {
                    return Err("--clients must be at least 1".into());
                }
                opts.clients = k as u32;
            }
            "--hold" => opts.hold = true,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if path.is_none() => path = Some(a.clone()),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    opts.conns = conns.ok_or("--conns is required")?;
    Ok((path.ok_or("no RULES file given")?, opts))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, opts) = match parse_args(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("simulate: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rules = match std::fs::read_to_string(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simulate: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match simulate(&rules, &opts) {
        Ok(sim) => {
            print!("{sim}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simulate: {path}: {e}");
            ExitCode::from(2)
        }
    }
}
