//! Hosts the network-namespace integration suite under `tests/tests/`, and what only that suite
//! uses: the CNI runtime emulator ([`cni`]), clusters of pods behind the port guard ([`guarded`]),
//! raw frames from inside a pod ([`frames`]), and the probes of the chaos and soak tests
//! ([`chaos`], [`synflood`]).

pub mod chaos;
pub mod cni;
pub mod frames;
pub mod guarded;
pub mod synflood;
