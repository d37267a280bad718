//! What the TAP port hands the router, as the TAP side takes it apart: a virtio-net header and a
//! frame, cut by the segmenter (TCP and UDP super-frames); and frames from a peer, offered to the
//! TCP and UDP coalescers as the UDP side does. Nothing may panic, every segment fits the size
//! the segmenter announced, and what a coalescer hands back starts with a header that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::offload::{Coalescer, Pushed, Segmenter, UdpCoalescer, VnetHdr, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(hdr) = VnetHdr::parse(data) {
        let frame = &data[VNET_HDR_LEN.min(data.len())..];
        if let Ok(mut seg) = Segmenter::new(&hdr, frame) {
            let max = seg.max_segment_len();
            let mut out = vec![0u8; max];
            // At most as many as announced (a bounded loop even on a hostile gso_size).
            for _ in 0..seg.count().min(4096) {
                match seg.next_into(&mut out) {
                    Ok(Some(n)) => assert!(n <= max),
                    _ => break,
                }
            }
        }
    }
    // The input as frames of a peer: records of a 2-byte length and that many bytes.
    let (mut tcp, mut udp) = (Coalescer::new(), UdpCoalescer::new());
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let frame = &rest[2..2 + n];
        rest = &rest[2 + n..];
        if tcp.push(frame) == Pushed::Held || udp.push(frame) == Pushed::Held {
            continue;
        }
        for held in [tcp.take().map(<[u8]>::to_vec), udp.take().map(<[u8]>::to_vec)]
            .into_iter()
            .flatten()
        {
            assert!(VnetHdr::parse(&held).is_ok());
        }
    }
});
