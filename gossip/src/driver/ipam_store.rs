//! The IPAM state file: read at start, written atomically whenever the state machine asks.

use crate::ipam::IpamState;
use crate::Error;

/// Reads a persisted IPAM state; `None` when the file does not exist.
pub(super) fn load_ipam_state(path: &std::path::Path) -> Result<Option<IpamState>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::IpamConfig(format!(
                "the IPAM state file {} does not parse ({e}); move it away to start afresh \
                 (this host then forgets its blocks and votes)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::IpamConfig(format!(
            "cannot read the IPAM state file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the IPAM state atomically: a temporary file, fsync, rename, fsync of the directory.
pub(super) fn save_ipam_state(path: &std::path::Path, state: &IpamState) -> std::io::Result<()> {
    use std::io::Write;
    let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
