//! Hosts the criterion benches under `benches/benches/`, and the chart of the iperf bench
//! ([`chart`], the `iperf-chart` binary that `benches/iperf/run.sh` calls).

pub mod chart;
