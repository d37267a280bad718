//! What the router checks in a request body before it acts on it: decoding ([`decode`],
//! [`decode_or_default`]), the attachment ([`Attachment::check`]) and the guarded port
//! ([`GuardRequest::check`]: its name and MAC address, which end up in an `nft -f` script).
//!
//! Pure functions next to the types, so that the router's answers to bad input are unit-tested
//! here and fuzzed (`fuzz/fuzz_targets/api_body.rs`) without a router. Every refusal is a
//! [`BadRequest`], which the router answers with HTTP 400.

use crate::guard::{GuardRequest, Port};
use crate::ipam::Attachment;
use serde::de::DeserializeOwned;

/// Why a request body is refused (HTTP 400), for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Decodes a JSON request body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest(e.to_string()))
}

/// Decodes a JSON request body that may be left out (`POST /v1/leave`): an empty body is
/// `T::default()`.
pub fn decode_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, BadRequest> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        decode(body)
    }
}

impl Attachment {
    /// A reservation needs both names (`POST /v1/ipam/allocate`).
    pub fn check(&self) -> Result<(), BadRequest> {
        if self.container_id.is_empty() || self.ifname.is_empty() {
            return Err(BadRequest(
                "container_id and ifname must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// Longest pod namespace or name accepted (Kubernetes allows 63 and 253 bytes).
pub const MAX_POD_NAME: usize = 253;

impl crate::ipam::PodRef {
    /// A pod identity: both names present, at most [`MAX_POD_NAME`] bytes, lowercase letters,
    /// digits, `-` and `.` (what Kubernetes allows in names), starting and ending with a letter
    /// or digit.
    pub fn check(&self) -> Result<(), BadRequest> {
        for (what, v) in [("namespace", &self.namespace), ("name", &self.name)] {
            let ok = !v.is_empty()
                && v.len() <= MAX_POD_NAME
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(BadRequest(format!(
                    "pod {what} {v:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.', at most {MAX_POD_NAME} bytes)"
                )));
            }
        }
        Ok(())
    }
}

/// A guarded port as the router keeps it: a name fit for an nft script and the MAC address,
/// parsed and in its canonical text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPort {
    /// The port, its MAC address written as [`format_mac`] writes it.
    pub port: Port,
    /// The MAC address: unicast, not all zeros.
    pub mac: [u8; 6],
}

impl GuardRequest {
    /// The port to guard (`POST /v1/ports/guard`): a valid name ([`valid_port_name`]) and a
    /// usable MAC address ([`parse_mac`], [`usable_mac`]). The attachment is not checked here:
    /// the router looks its reservation up, and an unknown one is refused there.
    pub fn check(&self) -> Result<CheckedPort, BadRequest> {
        let port = &self.port;
        if !valid_port_name(&port.name) {
            return Err(BadRequest(format!(
                "{:?} is not a port name (1 to 15 of A-Z a-z 0-9 _ . -)",
                port.name
            )));
        }
        let mac = parse_mac(&port.mac)
            .filter(|m| usable_mac(*m))
            .ok_or_else(|| BadRequest(format!("{:?} is not a unicast MAC address", port.mac)))?;
        Ok(CheckedPort {
            port: Port {
                name: port.name.clone(),
                mac: format_mac(&mac),
            },
            mac,
        })
    }
}

/// Whether `name` can be a port name here: 1 to 15 characters of `[A-Za-z0-9_.-]` (what
/// `weft-cni` makes is `vw` and 10 hex digits). Nothing else reaches an nft script.
pub fn valid_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parses `aa:bb:cc:dd:ee:ff` (six pairs of hex digits, either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        // `from_str_radix` also takes a sign: "+1" would pass as 01.
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Whether a pod may be given `mac`: unicast and not all zeros.
pub fn usable_mac(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::LeaveRequest;
    use crate::ipam::AllocateRequest;

    fn guard(name: &str, mac: &str) -> GuardRequest {
        GuardRequest {
            attachment: Attachment {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            port: Port {
                name: name.into(),
                mac: mac.into(),
            },
        }
    }

    #[test]
    fn bodies_decode_or_are_bad_requests() {
        let r: AllocateRequest =
            decode(br#"{"container_id":"c","ifname":"eth0","netns":"/x"}"#).unwrap();
        assert_eq!(r.attachment.ifname, "eth0");
        assert!(decode::<AllocateRequest>(br#"{"container_id":"c"}"#).is_err());
        assert!(decode::<AllocateRequest>(b"").is_err());
        let with_pod: AllocateRequest = decode(
            br#"{"container_id":"c","ifname":"eth0","pod":{"namespace":"x","name":"a-1.b"}}"#,
        )
        .unwrap();
        let pod = with_pod.pod.unwrap();
        assert!(pod.check().is_ok());
        for (ns, name) in [
            ("", "a"),
            ("x", ""),
            ("X", "a"),
            ("x", "a b"),
            ("x", "-a"),
            ("x", "a\n"),
        ] {
            let bad = crate::ipam::PodRef {
                namespace: ns.into(),
                name: name.into(),
            };
            assert!(bad.check().is_err(), "{ns:?}/{name:?}");
        }
        let long = crate::ipam::PodRef {
            namespace: "x".into(),
            name: "a".repeat(254),
        };
        assert!(long.check().unwrap_err().0.contains("253"));
        let l: LeaveRequest = decode_or_default(b"").unwrap();
        assert!(!l.force);
        let l: LeaveRequest = decode_or_default(br#"{"force":true}"#).unwrap();
        assert!(l.force);
        assert!(decode_or_default::<LeaveRequest>(b"{").is_err());
    }

    #[test]
    fn attachments_need_both_names() {
        let a = |c: &str, i: &str| Attachment {
            container_id: c.into(),
            ifname: i.into(),
        };
        assert!(a("c", "eth0").check().is_ok());
        assert!(a("", "eth0").check().is_err());
        assert!(a("c", "").check().is_err());
    }

    /// Regression (fuzz target `api_body`): `u8::from_str_radix` accepts a leading `+`, so
    /// `"06:42:AC:+1:00:02"` parsed as `06:42:ac:01:00:02`. Harmless (only the canonical form
    /// reaches nft), but not a MAC address.
    #[test]
    fn mac_addresses_are_six_pairs_of_hex_digits() {
        assert_eq!(
            parse_mac("06:42:AC:01:00:02"),
            Some([6, 0x42, 0xac, 1, 0, 2])
        );
        for bad in [
            "06:42:AC:+1:00:02",
            "06:42:ac:-1:00:02",
            "06:42:ac: 1:00:02",
            "06:42:ac:0x:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert!(guard("v12", "06:42:AC:+1:00:02").check().is_err());
    }

    #[test]
    fn guarded_ports_are_normalised_or_refused() {
        let c = guard("vw0123456789", "02:42:AC:11:00:02").check().unwrap();
        assert_eq!(c.port.mac, "02:42:ac:11:00:02");
        assert_eq!(c.mac, [2, 0x42, 0xac, 0x11, 0, 2]);
        for (name, mac) in [
            ("", "02:00:00:00:00:01"),
            ("a}", "02:00:00:00:00:01"),
            ("sixteen-chars-xx", "02:00:00:00:00:01"),
            ("vw01", "01:00:5e:00:00:01"),
            ("vw01", "00:00:00:00:00:00"),
            ("vw01", "02:00:00:00:00"),
        ] {
            let e = guard(name, mac).check().unwrap_err();
            assert!(e.0.contains(&format!("{name:?}")) || e.0.contains(&format!("{mac:?}")));
        }
    }
}
