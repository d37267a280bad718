//! The encrypted sleeve under a fixed key, with each AEAD. Arbitrary bytes must be refused
//! without panicking and without moving the replay window; and when the bytes happen to be a
//! plain sleeve datagram, it is sealed and must open back to exactly the same bytes with the same
//! AEAD, and not at all with the other one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use vswitch::session::{Aead, Key, Opener, Sealer, HEADROOM, TAG_LEN};
use vswitch::wire::SleeveDatagram;

const KEY: [u8; 32] = [0x5e; 32];

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let epoch = data.get(20).copied().unwrap_or(0);
    for aead in Aead::ALL {
        let mut opener = Opener::new(epoch, Key::for_aead(aead, KEY), Duration::from_secs(10));

        // As received: without the key's tag, nothing opens.
        let mut received = data.to_vec();
        assert!(opener.open_in_place(now, &mut received).is_err());
        assert_eq!(opener.highest_counter(), None);

        // As sent: a valid plain datagram seals and opens back to itself.
        if SleeveDatagram::new_checked(data).is_ok() {
            let mut sealer = Sealer::new(now, epoch, Key::for_aead(aead, KEY));
            let mut buf = vec![0u8; HEADROOM + data.len() + TAG_LEN];
            buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
            let n = sealer.seal_in_place(&mut buf, data.len()).expect("seal");
            let other = Aead::ALL.into_iter().find(|a| *a != aead).expect("two AEADs");
            let mut wrong = Opener::new(epoch, Key::for_aead(other, KEY), Duration::from_secs(10));
            assert!(wrong.open_in_place(now, &mut buf[..n].to_vec()).is_err());
            let range = opener.open_in_place(now, &mut buf[..n]).expect("open");
            assert_eq!(&buf[range], data);
        }
    }
});
