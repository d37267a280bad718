//! Hosts the network-namespace integration suite under `tests/tests/`, and what only that suite
//! uses: the CNI runtime emulator ([`cni`]), clusters of pods behind the port guard ([`guarded`])
//! and raw frames from inside a pod ([`frames`]).

pub mod cni;
pub mod frames;
pub mod guarded;
