//! Hosts the criterion benches under `benches/benches/`.
