//! The rule set as the kernel holds it (an ordered list of services, each with its ordered
//! destinations) and the kernel's semantics for applying ipvsadm commands to it.
//!
//! Errors carry the text ipvsadm prints for the kernel's answer (libipvs `ipvs_strerror`).

use std::net::IpAddr;

use crate::dest::DestConfig;
use crate::service::{ServiceConfig, ServiceKey};

use super::parse::{Command, ListOptions, ParseError, Timeouts, parse_line};

/// Why the kernel (and so lvs) refused a command; `Display` is ipvsadm's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The command line itself is invalid (ipvsadm's own checks).
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// `-A` of an existing service (EEXIST).
    #[error("Service already exists")]
    ServiceExists,
    /// `-E`, `-D`, `-Z`, `-L` of a missing service (ESRCH).
    #[error("No such service")]
    NoSuchService,
    /// `-a`, `-e`, `-d` on a missing service (ESRCH).
    #[error("Service not defined")]
    ServiceNotDefined,
    /// `-a` of an existing destination (EEXIST).
    #[error("Destination already exists")]
    DestExists,
    /// `-e`, `-d` of a missing destination (ENOENT).
    #[error("No such destination")]
    NoSuchDest,
    /// The lower threshold is above the upper one (the kernel's ERANGE, printed by strerror).
    #[error("Numerical result out of range")]
    Range,
    /// A destination address that is not unicast (the kernel's EINVAL).
    #[error("Invalid operation.  Possibly wrong module version, address not unicast, ...")]
    Invalid,
    /// `-R` inside a restore file.
    #[error("-R cannot be used in a restore file")]
    NestedRestore,
}

/// A failed batch: the 1-based line number and what went wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct BatchError {
    /// 1-based line number in the restore input.
    pub line: usize,
    /// The problem on that line.
    pub error: RuleError,
}

/// What a successful command asks of the caller beyond the rule set itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The rule set changed: publish it (`table.publish(&ruleset.services)`).
    Changed,
    /// Zero the counters (and rate estimators) of this service, or of all with `None`.
    Zero(Option<ServiceKey>),
    /// Install these connection timeouts.
    SetTimeouts(Timeouts),
    /// Print a listing with these options (the service, if named, exists).
    List(ListOptions),
    /// Print the rules in save format.
    Save {
        /// `-n` was given.
        numeric: bool,
    },
    /// Read a restore file (the caller feeds it to [`RuleSet::apply_batch`]).
    Restore,
}

/// The configured virtual services in the kernel's order (the order they were added).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Services in configuration order; each service's `dests` in the kernel's list order.
    pub services: Vec<ServiceConfig>,
}

/// The kernel's `inet_addr_type` test for destinations: no zero, broadcast or multicast address.
fn is_unicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

fn check_dest(dest: &DestConfig) -> Result<(), RuleError> {
    // ip_vs_add_dest / ip_vs_edit_dest: "lower threshold is higher than upper threshold".
    if dest.lower_threshold > dest.upper_threshold {
        return Err(RuleError::Range);
    }
    if !is_unicast(&dest.addr) {
        return Err(RuleError::Invalid);
    }
    Ok(())
}

impl RuleSet {
    /// An empty rule set.
    pub fn new() -> RuleSet {
        RuleSet::default()
    }

    fn index(&self, key: &ServiceKey) -> Option<usize> {
        self.services.iter().position(|s| s.key == *key)
    }

    /// The service with this key.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.key == *key)
    }

    /// Applies one command with the kernel's semantics. On error nothing changed.
    pub fn apply(&mut self, cmd: Command) -> Result<Outcome, RuleError> {
        match cmd {
            Command::AddService(cfg) => {
                if self.index(&cfg.key).is_some() {
                    return Err(RuleError::ServiceExists);
                }
                self.services.push(ServiceConfig {
                    dests: Vec::new(),
                    ..cfg
                });
                Ok(Outcome::Changed)
            }
            Command::EditService(cfg) => {
                let i = self.index(&cfg.key).ok_or(RuleError::NoSuchService)?;
                let dests = std::mem::take(&mut self.services[i].dests);
                self.services[i] = ServiceConfig { dests, ..cfg };
                Ok(Outcome::Changed)
            }
            Command::DeleteService(key) => {
                let i = self.index(&key).ok_or(RuleError::NoSuchService)?;
                self.services.remove(i);
                Ok(Outcome::Changed)
            }
            Command::Clear => {
                self.services.clear();
                Ok(Outcome::Changed)
            }
            Command::AddDest { service, dest } => {
                let i = self.index(&service).ok_or(RuleError::ServiceNotDefined)?;
                check_dest(&dest)?;
                let svc = &mut self.services[i];
                if svc.dest_index(dest.addr, dest.port).is_some() {
                    return Err(RuleError::DestExists);
                }
                // __ip_vs_update_dest: list_add() puts the new destination at the head.
                svc.dests.insert(0, dest);
                Ok(Outcome::Changed)
            }
            Command::EditDest { service, dest } => {
                let i = self.index(&service).ok_or(RuleError::ServiceNotDefined)?;
                check_dest(&dest)?;
                let svc = &mut self.services[i];
                let d = svc
                    .dest_index(dest.addr, dest.port)
                    .ok_or(RuleError::NoSuchDest)?;
                // Editing keeps the destination's place in the list.
                svc.dests[d] = dest;
                Ok(Outcome::Changed)
            }
            Command::DeleteDest { service, addr, port } => {
                let i = self.index(&service).ok_or(RuleError::ServiceNotDefined)?;
                let svc = &mut self.services[i];
                let d = svc.dest_index(addr, port).ok_or(RuleError::NoSuchDest)?;
                svc.dests.remove(d);
                Ok(Outcome::Changed)
            }
            Command::Zero(key) => {
                if let Some(k) = &key {
                    self.index(k).ok_or(RuleError::NoSuchService)?;
                }
                Ok(Outcome::Zero(key))
            }
            Command::SetTimeouts(t) => Ok(Outcome::SetTimeouts(t)),
            Command::List(opts) => {
                if let Some(k) = &opts.service {
                    self.index(k).ok_or(RuleError::NoSuchService)?;
                }
                Ok(Outcome::List(opts))
            }
            Command::Save { numeric } => Ok(Outcome::Save { numeric }),
            Command::Restore => Ok(Outcome::Restore),
        }
    }

    /// Parses and applies one command line (`ipvsadm` arguments, as a shell would split them).
    pub fn apply_line(&mut self, line: &str) -> Result<Option<Outcome>, RuleError> {
        match parse_line(line)? {
            Some(cmd) => self.apply(cmd).map(Some),
            None => Ok(None),
        }
    }

    /// Applies a whole restore file (`ipvsadm-save` output or any ipvsadm command lines) to a
    /// copy and commits it only if every line succeeds. Blank lines and `#` comments are
    /// skipped. Returns the outcomes of the lines other than plain rule changes (e.g. `-Z`,
    /// `--set`), in order; on error the rule set is unchanged.
    pub fn apply_batch(&mut self, input: &str) -> Result<Vec<Outcome>, BatchError> {
        let mut copy = self.clone();
        let mut effects = Vec::new();
        for (n, line) in input.lines().enumerate() {
            let fail = |error: RuleError| BatchError { line: n + 1, error };
            match copy.apply_line(line).map_err(fail)? {
                None | Some(Outcome::Changed) => {}
                Some(Outcome::Restore) => return Err(fail(RuleError::NestedRestore)),
                Some(other) => effects.push(other),
            }
        }
        *self = copy;
        Ok(effects)
    }
}
