//! `weft demo` (being written).

/// Options of `weft demo`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep the cluster running until Ctrl-C after the checks.
    pub keep: bool,
}

/// Runs the demo.
pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
