//! The Noise handshake messages: arbitrary bytes as the first message (to a responder) and as
//! the second (to an initiator that sent its first). They must be refused cleanly, never panic.
#![no_main]

use gossip::secure::{Handshake, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::from_bytes(b"a fuzzing secret of enough length").unwrap();
    if let Ok(mut r) = Handshake::new(&secret, false) {
        if r.read(data).is_ok() {
            let _ = r.write();
        }
    }
    if let Ok(mut i) = Handshake::new(&secret, true) {
        if i.write().is_ok() {
            let _ = i.read(data);
        }
    }
});
