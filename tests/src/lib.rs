//! Hosts the network-namespace integration suite under `tests/tests/`, and what only that suite
//! uses: the CNI runtime emulator ([`cni`]), clusters of pods behind the port guard ([`guarded`]),
//! raw frames from inside a pod ([`frames`]), the probes of the chaos and soak tests ([`chaos`],
//! [`synflood`]), the NetworkPolicy end-to-end harness ([`netpol`]), one-shot servers and the relay check
//! ([`net`]), and podman with the
//! container image ([`podman`]).

pub mod chaos;
pub mod cni;
pub mod frames;
pub mod guarded;
pub mod net;
pub mod netpol;
pub mod podman;
pub mod synflood;
