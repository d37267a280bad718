//! Hosts the network-namespace integration suite under `tests/tests/`, and what only that suite
//! uses: the CNI runtime emulator ([`cni`]) and the probes of the chaos and soak tests
//! ([`chaos`], [`synflood`]).

pub mod chaos;
pub mod cni;
pub mod synflood;
