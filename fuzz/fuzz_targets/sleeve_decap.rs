//! A received UDP payload, as the receive path takes it apart: the plain sleeve view, every frame
//! record handed to the switch, and the encrypted view relays use. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use vswitch::session::{EncryptedDatagram, ENCRYPTED_HEADER_LEN};
use vswitch::wire::SleeveDatagram;
use vswitch::{Fdb, Switch};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut switch = Switch::new(Fdb::new(64, Duration::from_secs(300)));
    if let Ok(d) = SleeveDatagram::new_checked(data) {
        let src = d.header().src;
        for frame in d.frames() {
            let Ok(frame) = frame else { break };
            let _ = switch.from_peer(now, src, frame);
        }
    }
    if let Ok(d) = EncryptedDatagram::new_checked(data) {
        assert_eq!(
            d.ciphertext().len() + d.tag().len() + ENCRYPTED_HEADER_LEN,
            data.len()
        );
        let _ = (d.header(), d.epoch(), d.counter(), d.associated_data());
    }
});
