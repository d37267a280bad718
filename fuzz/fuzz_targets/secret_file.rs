//! The cluster secret file (`--secret-file`), as `gossip::secure::Secret::from_bytes` reads it
//! today: one secret, surrounding whitespace ignored, at least 16 bytes. Named for the file rather
//! than the function so that it can grow with the file format (several lines, key rotation).
//! Arbitrary contents must be refused or accepted without panicking; an accepted secret is the
//! same key with any surrounding whitespace, and it starts a handshake.
#![no_main]

use gossip::secure::{Handshake, Secret};
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
            assert_eq!(format!("{secret:?}"), "Secret(..)");
            let mut i = Handshake::new(&secret, true).expect("any secret starts a handshake");
            assert!(i.write().is_ok());
        }
        Err(e) => {
            assert!(trimmed.len() < 16);
            // The message names the length, never the contents.
            assert!(e.contains(&format!("has {} bytes", trimmed.len())), "{e}");
        }
    }
});
