//! The state directory (`--state-dir`, default `/run/weft`): the API socket and what must survive
//! a restart, today the peer name.

use anyhow::{Context, Result};
use std::path::Path;
use vswitch::PeerName;

/// File holding the peer name.
pub const PEER_NAME_FILE: &str = "peer-name";

/// Reads the peer name kept in `dir`, or makes a new random one and keeps it.
pub fn load_or_create_peer_name(dir: &Path) -> Result<PeerName> {
    let path = dir.join(PEER_NAME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<PeerName>()
            .ok()
            .filter(|p| !p.is_broadcast())
            .with_context(|| format!("{} does not hold a valid peer name", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = loop {
                let n = rand::random::<u64>();
                if n != 0 {
                    break PeerName(n);
                }
            };
            let tmp = dir.join(format!("{PEER_NAME_FILE}.tmp"));
            std::fs::write(&tmp, format!("{name}\n"))
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
            Ok(name)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_name_is_stable() {
        let dir = std::env::temp_dir().join(format!("weft-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = load_or_create_peer_name(&dir).unwrap();
        let b = load_or_create_peer_name(&dir).unwrap();
        assert_eq!(a, b);
        std::fs::write(dir.join(PEER_NAME_FILE), "junk").unwrap();
        assert!(load_or_create_peer_name(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
