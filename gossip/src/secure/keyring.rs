//! Several cluster secrets at once, for rotating the secret without downtime: the secret file's
//! format (one secret per line), the public fingerprint that names a secret, and the choice of the
//! secret a responder completes a handshake with.
//!
//! The first secret of the file is the **preferred** one: this host dials with it. Every secret of
//! the file is **accepted**: a peer that dials with any of them is let in. A fingerprint is the
//! first four bytes of SHA-256 over a label distinct from the key derivation's and the secret; it
//! names a secret in logs, in status and on the wire, and reveals no more about it than the Noise
//! handshake itself does (both allow a dictionary attack on a weak secret, none on a random one).

use super::Secret;
use ring::digest;
use std::fmt;
use std::sync::Arc;

/// The public name of a secret: 4 bytes, shown as 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 4]);

impl Fingerprint {
    /// The fingerprint of a secret's bytes (already trimmed).
    pub fn of(secret: &[u8]) -> Fingerprint {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"weft secret fingerprint v1\0");
        ctx.update(secret);
        let d = ctx.finish();
        let mut f = [0u8; 4];
        f.copy_from_slice(&d.as_ref()[..4]);
        Fingerprint(f)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Fingerprints as `a, b, c` for messages.
pub fn list(fps: impl IntoIterator<Item = Fingerprint>) -> String {
    let v: Vec<String> = fps.into_iter().map(|f| f.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Parses a secret file: one secret per line, the first preferred. Lines are trimmed; blank lines
/// and lines starting with `#` are skipped. A file that is not UTF-8 is one binary secret, as
/// before multi-secret files existed (its newlines are part of it). Refused, with the line
/// number: a secret shorter than 16 bytes, a secret given twice, a file without any secret.
pub fn parse_secret_file(contents: &[u8]) -> Result<Vec<Secret>, String> {
    let Ok(text) = std::str::from_utf8(contents) else {
        return Secret::from_bytes(contents).map(|s| vec![s]);
    };
    let mut out: Vec<(usize, Secret)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let s = Secret::from_bytes(line.as_bytes()).map_err(|e| format!("line {}: {e}", i + 1))?;
        if let Some((first, _)) = out.iter().find(|(_, o)| o == &s) {
            return Err(format!(
                "line {}: the same secret as line {first} (fingerprint {})",
                i + 1,
                s.fingerprint()
            ));
        }
        out.push((i + 1, s));
    }
    if out.is_empty() {
        return Err("the secret file holds no secret (only blank or # comment lines)".into());
    }
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

/// The secrets a host holds: the first is preferred, all are accepted. Never empty.
#[derive(Debug, Clone)]
pub struct Keyring {
    accepted: Vec<Arc<Secret>>,
}

impl Keyring {
    /// A keyring of these secrets (the first preferred); `None` when empty.
    pub fn new(secrets: Vec<Secret>) -> Option<Keyring> {
        if secrets.is_empty() {
            return None;
        }
        Some(Keyring {
            accepted: secrets.into_iter().map(Arc::new).collect(),
        })
    }

    /// A keyring of one secret.
    pub fn single(secret: Secret) -> Keyring {
        Keyring {
            accepted: vec![Arc::new(secret)],
        }
    }

    /// Parses a secret file ([`parse_secret_file`]).
    pub fn parse(contents: &[u8]) -> Result<Keyring, String> {
        parse_secret_file(contents).map(|v| Keyring::new(v).expect("parse refuses empty files"))
    }

    /// The secret new handshakes use.
    pub fn preferred(&self) -> &Arc<Secret> {
        &self.accepted[0]
    }

    /// Every accepted secret, the preferred first.
    pub fn accepted(&self) -> &[Arc<Secret>] {
        &self.accepted
    }

    /// Whether a secret with this fingerprint is accepted.
    pub fn accepts(&self, fp: Fingerprint) -> bool {
        self.accepted.iter().any(|s| s.fingerprint() == fp)
    }

    /// The fingerprints, the preferred first.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.accepted.iter().map(|s| s.fingerprint()).collect()
    }

    /// The secrets a responder tries, in order, for a handshake whose initiator named `offered`
    /// (`None`: an initiator that names no fingerprint, i.e. a router from before multi-secret
    /// files, and every accepted secret is tried).
    pub fn candidates(&self, offered: Option<Fingerprint>) -> Vec<Arc<Secret>> {
        self.accepted
            .iter()
            .filter(|s| offered.is_none_or(|f| s.fingerprint() == f))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "the first secret, long enough";
    const B: &str = "the second secret, long enough";

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::of(s.as_bytes())
    }

    #[test]
    fn one_secret_per_line_the_first_preferred() {
        let text = format!("# rotated 2024-05\n\n  {B}  \n{A}\n\n");
        let k = Keyring::parse(text.as_bytes()).unwrap();
        assert_eq!(k.fingerprints(), vec![fp(B), fp(A)]);
        assert_eq!(k.preferred().fingerprint(), fp(B));
        assert!(k.accepts(fp(A)));
        assert!(!k.accepts(fp("a third secret, not in the file")));
    }

    #[test]
    fn a_single_secret_file_gives_the_same_key_as_before() {
        let old = Secret::from_bytes(format!("{A}\n").as_bytes()).unwrap();
        let k = Keyring::parse(format!("{A}\n").as_bytes()).unwrap();
        assert_eq!(k.preferred().psk(), old.psk());
        // A binary secret (not UTF-8) stays one secret, newlines and all.
        let bin = b"\xff\xfe binary\nsecret of enough bytes";
        let k = Keyring::parse(bin).unwrap();
        assert_eq!(k.accepted().len(), 1);
        assert_eq!(k.preferred().psk(), Secret::from_bytes(bin).unwrap().psk());
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let e = Keyring::parse(format!("{A}\nshort\n").as_bytes()).unwrap_err();
        assert!(e.starts_with("line 2:") && e.contains("5 bytes"), "{e}");
        let e = Keyring::parse(format!("{A}\n# c\n{A}\n").as_bytes()).unwrap_err();
        assert!(e.contains("line 3: the same secret as line 1"), "{e}");
        assert!(e.contains(&fp(A).to_string()), "{e}");
        let e = Keyring::parse(b"# only a comment\n\n").unwrap_err();
        assert!(e.contains("no secret"), "{e}");
        assert!(Keyring::parse(b"").is_err());
    }

    #[test]
    fn fingerprints_are_stable_distinct_and_not_the_key() {
        // Pinned: a change here changes what operators compare across hosts.
        assert_eq!(fp(A).to_string().len(), 8);
        // The same as `printf 'weft secret fingerprint v1\0%s' ... | sha256sum` (operations.md).
        assert_eq!(
            fp("the new weft test secret, long enough").to_string(),
            "ba980436"
        );
        assert_eq!(fp(A), fp(A));
        assert_ne!(fp(A), fp(B));
        let s = Secret::from_bytes(A.as_bytes()).unwrap();
        assert_eq!(s.fingerprint(), fp(A));
        assert_ne!(&s.psk()[..4], &fp(A).0, "another label than the key's");
        assert_eq!(format!("{:?}", fp(A)), format!("Fingerprint({})", fp(A)));
        assert_eq!(list([]), "none");
        assert_eq!(list([fp(A), fp(B)]), format!("{}, {}", fp(A), fp(B)));
    }

    #[test]
    fn candidates_follow_the_offered_fingerprint() {
        let k = Keyring::parse(format!("{A}\n{B}\n").as_bytes()).unwrap();
        let fps = |v: Vec<Arc<Secret>>| v.iter().map(|s| s.fingerprint()).collect::<Vec<_>>();
        assert_eq!(fps(k.candidates(Some(fp(B)))), vec![fp(B)]);
        assert_eq!(fps(k.candidates(None)), vec![fp(A), fp(B)]);
        assert!(k
            .candidates(Some(fp("a third secret, not in the file")))
            .is_empty());
    }
}
