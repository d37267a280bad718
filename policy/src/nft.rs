//! [`HostRules`] as nftables: the ruleset of `table inet weft_policy`, modelled as sets with
//! elements and chains with rules ([`Ruleset`]), so that going from one ruleset to the next is
//! one `nft -f` transaction of set element additions and deletions and of rewritten chains only
//! where their rules changed ([`transaction`]).

use crate::HostRules;

/// The table (family `inet`).
pub const TABLE: &str = "weft_policy";

/// A ruleset as written (and as read back from the kernel, for reconciling after a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    // Filled in by the implementation.
}

/// The ruleset for `rules`.
pub fn ruleset(_rules: &HostRules) -> Ruleset {
    todo!()
}

/// The `nft -f` script that takes the kernel from `from` (`None`: no table) to `to`, as one
/// transaction.
pub fn transaction(_from: Option<&Ruleset>, _to: &Ruleset) -> String {
    todo!()
}

/// The ruleset in force, from `nft -j list table inet weft_policy` (for reconciling at start).
pub fn from_json(_json: &str) -> Option<Ruleset> {
    todo!()
}

/// The script that removes the table (and succeeds when there is none).
pub fn remove() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}
