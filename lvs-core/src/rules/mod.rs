//! The ipvsadm rule language: parsing command lines and `-S` save files, applying them to a
//! rule set atomically, and printing ipvsadm's listings byte for byte.
//!
//! - [`parse`]: argv → [`Command`], with ipvsadm 1.31's option table, defaults and messages.
//! - [`ruleset`]: [`RuleSet`] (the services in kernel order) and the kernel's answers to each
//!   command; [`RuleSet::apply_batch`] applies a restore file all-or-nothing.
//! - [`print`](mod@print): `-L -n` (all its variants) and `-S -n` from [`ServiceView`]s of a live
//!   [`crate::ServiceSet`] or of bare configuration.
//! - [`simulate`](mod@simulate): schedule synthetic connections through a rule set.
//!
//! Publishing a rule set is `table.publish(&ruleset.services)`.

pub mod parse;
pub mod print;
pub mod ruleset;
pub mod simulate;

pub use parse::{Command, ListOptions, MAX_TIMEOUT, ParseError, Timeouts, parse_args, parse_line};
pub use print::{
    DEFAULT_TABLE_SIZE, DestView, ServiceView, config_views, format_list, format_save, format_timeouts, views,
};
pub use ruleset::{BatchError, Outcome, RuleError, RuleSet};
pub use simulate::{Pick, ServiceRun, SimOptions, Simulation, simulate};
