//! Hosts the network-namespace integration suite under `tests/tests/`, and what only that suite
//! uses: the CNI runtime emulator ([`cni`]).

pub mod cni;
