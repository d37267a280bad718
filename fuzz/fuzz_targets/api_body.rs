//! The JSON bodies of the router's API socket, as the router decodes and checks them
//! (`weft_api::check`, used by `router/src/daemon/server.rs`), and the answers the plugin and the
//! CLI decode. The first byte picks the endpoint, the rest is the body. No input may panic; a
//! body that is accepted encodes and decodes to itself; a checked port is one the nft scripts
//! can take.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use weft_api::check::{self, parse_mac, usable_mac, valid_port_name};
use weft_api::control::{LeaveRequest, SeedRequest};
use weft_api::guard::{GuardAnswer, GuardRequest};
use weft_api::ipam::{AllocateRequest, Allocation, Attachment, GcRequest, IpamReport};
use weft_api::status::Report;
use weft_api::ApiError;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 10 {
        // POST /v1/ipam/allocate
        0 => {
            if let Some(r) = decoded::<AllocateRequest>(body) {
                if r.attachment.check().is_ok() {
                    assert!(!r.attachment.container_id.is_empty());
                    assert!(!r.attachment.ifname.is_empty());
                }
            }
        }
        // POST /v1/ipam/release
        1 => {
            let _ = decoded::<Attachment>(body).map(|a| a.check());
        }
        // POST /v1/ipam/gc
        2 => {
            let _ = decoded::<GcRequest>(body);
        }
        // POST /v1/ports/guard
        3 => {
            if let Some(r) = decoded::<GuardRequest>(body) {
                if let Ok(c) = r.check() {
                    assert!(valid_port_name(&c.port.name));
                    assert!(c.port.name.bytes().all(|b| b.is_ascii_graphic()));
                    assert_eq!(parse_mac(&c.port.mac), Some(c.mac));
                    assert!(usable_mac(c.mac));
                    assert_eq!(c.port.mac.len(), 17);
                    assert!(c.port.mac.eq_ignore_ascii_case(&r.port.mac));
                }
            }
        }
        // POST /v1/leave (the body may be empty)
        4 => {
            if let Ok(l) = check::decode_or_default::<LeaveRequest>(body) {
                let back: LeaveRequest = check::decode(&serde_json::to_vec(&l).unwrap()).unwrap();
                assert_eq!(back.force, l.force);
            }
        }
        // POST /v1/connect, /v1/forget: decoded only (the address is resolved by the router).
        5 => {
            let _ = check::decode::<SeedRequest>(body);
        }
        // Answers: what weft-cni and `weft status` read from the router.
        6 => {
            let _ = decoded::<Allocation>(body);
        }
        7 => {
            let _ = decoded::<IpamReport>(body);
        }
        8 => {
            let _ = decoded::<GuardAnswer>(body);
            let _ = decoded::<ApiError>(body);
        }
        _ => {
            if let Ok(r) = check::decode::<Report>(body) {
                let _ = (r.render(), r.render_ipam(), r.render_targets());
            }
        }
    }
});

/// Decodes `body` as the router does; what decodes encodes and decodes to itself.
fn decoded<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) -> Option<T> {
    let v: T = check::decode(body).ok()?;
    let again: T = check::decode(&serde_json::to_vec(&v).expect("encodes")).expect("decodes");
    assert_eq!(again, v);
    Some(v)
}
