//! Hosts the network-namespace integration suite under `tests/tests/`.
