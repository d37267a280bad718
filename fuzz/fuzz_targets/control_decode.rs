//! Control-channel decoders: the preamble, the length prefix and every message body (hello,
//! heartbeat, goodbye, gossip, rekey). No input may make them panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 {
        let _ = gossip::secure::parse_preamble(data[..8].try_into().unwrap());
    }
    if data.len() >= 4 {
        let _ = gossip::proto::decode_len(data[..4].try_into().unwrap());
    }
    if let Ok(msg) = gossip::proto::decode_body(data) {
        // Whatever decodes must encode again.
        let _ = gossip::proto::encode(&msg);
    }
});
