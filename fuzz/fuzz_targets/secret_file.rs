//! The cluster secret file (`--secret-file`): one secret as `gossip::secure::Secret::from_bytes`
//! reads it (surrounding whitespace ignored, at least 16 bytes), and the whole file as
//! `Keyring::parse` reads it (several secrets, one per line, for rotation). Arbitrary contents
//! must be refused or accepted without panicking; an accepted secret is the same key with any
//! surrounding whitespace, shows only its fingerprint, and starts a handshake; a parsed file
//! prefers its first secret and accepts every one it lists.
#![no_main]

use gossip::secure::{Handshake, Keyring, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let trimmed = data.trim_ascii();
    match Secret::from_bytes(data) {
        Ok(secret) => {
            assert!(trimmed.len() >= 16);
            let mut padded = b" \n\t".to_vec();
            padded.extend_from_slice(data);
            padded.extend_from_slice(b"\r\n");
            let again = Secret::from_bytes(&padded).expect("whitespace changes nothing");
            assert_eq!(again.psk(), secret.psk());
            // Debug names the secret by its fingerprint, never by its bytes.
            assert_eq!(format!("{secret:?}"), format!("Secret({})", secret.fingerprint()));
            let mut i = Handshake::new(&secret, true).expect("any secret starts a handshake");
            assert!(i.write().is_ok());
        }
        Err(e) => {
            assert!(trimmed.len() < 16);
            // The message names the length, never the contents.
            assert!(e.contains(&format!("has {} bytes", trimmed.len())), "{e}");
        }
    }
    if let Ok(ring) = Keyring::parse(data) {
        let accepted = ring.accepted();
        assert!(!accepted.is_empty());
        assert_eq!(ring.preferred().fingerprint(), accepted[0].fingerprint());
        for s in accepted {
            assert!(ring.accepts(s.fingerprint()));
        }
    }
});
