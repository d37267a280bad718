//! The state directory (`--state-dir`, default `/run/weft`): the API socket and what must survive
//! a restart: the peer name and the seed list.

use anyhow::{Context, Result};
use std::path::Path;
use vswitch::PeerName;

/// File holding the peer name.
pub const PEER_NAME_FILE: &str = "peer-name";
/// File holding the seed list (one `ADDR:PORT` per line).
pub const SEEDS_FILE: &str = "seeds";

/// Reads the seed list kept in `dir` (empty if there is none).
pub fn load_seeds(dir: &Path) -> Result<Vec<std::net::SocketAddr>> {
    let path = dir.join(SEEDS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse()
                .with_context(|| format!("{}: {l:?} is not an ADDR:PORT", path.display()))
        })
        .collect()
}

/// Replaces the seed list kept in `dir`.
pub fn save_seeds(dir: &Path, seeds: &[std::net::SocketAddr]) -> Result<()> {
    let mut text =
        String::from("# weft seed list: written by weft router, weft connect and weft forget\n");
    for s in seeds {
        text.push_str(&format!("{s}\n"));
    }
    let path = dir.join(SEEDS_FILE);
    let tmp = dir.join(format!("{SEEDS_FILE}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

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
        let seeds: Vec<std::net::SocketAddr> = vec!["10.0.0.1:6783".parse().unwrap()];
        save_seeds(&dir, &seeds).unwrap();
        assert_eq!(load_seeds(&dir).unwrap(), seeds);
        std::fs::write(dir.join(PEER_NAME_FILE), "junk").unwrap();
        assert!(load_or_create_peer_name(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
