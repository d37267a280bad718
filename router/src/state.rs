//! The state directory (`--state-dir`, default `/run/weft`): the API socket and what must survive
//! a restart: the host key, the peer name and the seed list.

use anyhow::{Context, Result};
use gossip::sign::HostKey;
use std::path::Path;
use vswitch::PeerName;

/// File holding the peer name.
pub const PEER_NAME_FILE: &str = "peer-name";
/// File holding the host's Ed25519 key (PKCS#8, mode 0600): it signs our gossiped records.
pub const HOST_KEY_FILE: &str = "host-key";
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

/// Reads the host key kept in `dir`, or draws a new one and keeps it (readable by root only).
pub fn load_or_create_host_key(dir: &Path) -> Result<HostKey> {
    let path = dir.join(HOST_KEY_FILE);
    match std::fs::read(&path) {
        Ok(doc) => HostKey::from_pkcs8(&doc).with_context(|| {
            format!(
                "{} does not hold a host key (delete it to draw a new one: the host then \
                 needs a new peer name too, see docs/security.md)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let doc = HostKey::generate_pkcs8()?;
            let tmp = dir.join(format!("{HOST_KEY_FILE}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&doc)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            Ok(HostKey::from_pkcs8(&doc)?)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads the peer name kept in `dir`, or takes the one `key` derives and keeps it. A host that
/// kept a random name from before host keys keeps that name (docs/security.md).
pub fn load_or_create_peer_name(dir: &Path, key: &HostKey) -> Result<PeerName> {
    let path = dir.join(PEER_NAME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<PeerName>()
            .ok()
            .filter(|p| !p.is_broadcast())
            .with_context(|| format!("{} does not hold a valid peer name", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = key.derived_name();
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
        let key = load_or_create_host_key(&dir).unwrap();
        let again = load_or_create_host_key(&dir).unwrap();
        assert_eq!(key.public(), again.public(), "the key is kept");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(HOST_KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let a = load_or_create_peer_name(&dir, &key).unwrap();
        let b = load_or_create_peer_name(&dir, &again).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, key.derived_name(), "a new host's name is its key's");
        // A name kept from before host keys stays.
        std::fs::write(dir.join(PEER_NAME_FILE), "0000:0000:0000:002a\n").unwrap();
        assert_ne!(load_or_create_peer_name(&dir, &key).unwrap(), a);
        let seeds: Vec<std::net::SocketAddr> = vec!["10.0.0.1:6783".parse().unwrap()];
        save_seeds(&dir, &seeds).unwrap();
        assert_eq!(load_seeds(&dir).unwrap(), seeds);
        std::fs::write(dir.join(PEER_NAME_FILE), "junk").unwrap();
        assert!(load_or_create_peer_name(&dir, &key).is_err());
        std::fs::write(dir.join(HOST_KEY_FILE), "junk").unwrap();
        assert!(load_or_create_host_key(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
