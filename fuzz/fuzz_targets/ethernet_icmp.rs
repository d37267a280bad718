//! The ICMP too-big reply for an arbitrary frame: never panics, never fails with a buffer of
//! `MAX_REPLY_LEN`, and a reply is itself a frame that is never answered (errors do not answer
//! errors).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::wire::icmp::{too_big_reply, TooBig, MAX_REPLY_LEN};
use vswitch::wire::EthernetFrame;

fuzz_target!(|data: &[u8]| {
    let (mtu, frame) = match data {
        [a, b, rest @ ..] => (u32::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return,
    };
    let mut out = [0u8; MAX_REPLY_LEN];
    match too_big_reply(frame, mtu, &mut out).expect("MAX_REPLY_LEN always suffices") {
        TooBig::NoReply => {}
        TooBig::Reply(n) => {
            assert!(n <= MAX_REPLY_LEN);
            assert!(EthernetFrame::new_checked(&out[..n]).is_ok());
            let mut again = [0u8; MAX_REPLY_LEN];
            assert_eq!(
                too_big_reply(&out[..n], mtu, &mut again),
                Ok(TooBig::NoReply)
            );
        }
    }
});
