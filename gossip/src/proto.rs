//! Control messages and their framing on the TCP connection.
//!
//! Each message is a 4-byte big-endian length followed by that many bytes of JSON (one
//! [`Message`]). JSON keeps the control channel easy to inspect; it carries a few messages a
//! second per peer. Lengths above [`MAX_MESSAGE_LEN`] close the connection. `docs/wire-format.md`
//! documents the framing and the handshake.

use crate::sign::{HostKey, PublicKey, Signature, HELLO_DOMAIN};
use crate::{Error, PeerName};
use serde::{Deserialize, Serialize};

/// The protocol tag every hello carries.
pub const PROTOCOL: &str = "weft";
/// Lowest control protocol version this build speaks.
pub const MIN_VERSION: u16 = 1;
/// Highest control protocol version this build speaks.
pub const MAX_VERSION: u16 = 3;
/// The version from which the dialler of an encrypted connection hands the data session over to
/// the connection's keys with [`Message::Handover`] (version 1: both ends switch to them at once).
pub const HANDOVER_VERSION: u16 = 2;
/// The version from which a connection carries [`Message::TraceArm`] and
/// [`Message::TraceReport`] (`weft trace --live`); they are never sent to a peer of an earlier
/// version, which would close the connection on a message it does not know.
pub const TRACE_VERSION: u16 = 3;
/// The [`Message::Goodbye`] reason of a connection closed because a newer connection to the same
/// peer replaced it: the receiver waits a moment for that connection before it reports the peer
/// down (older routers send `closing` and are reported down at once, as before).
pub const GOODBYE_REPLACED: &str = "replaced by a newer connection";
/// Largest message body accepted.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// The first message each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// Lowest version the sender speaks.
    pub min_version: u16,
    /// Highest version the sender speaks.
    pub max_version: u16,
    /// The sender's stable name.
    pub name: u64,
    /// Unique per run of the sender: a change means it restarted.
    pub uid: u64,
    /// Human-friendly name (host name).
    pub nickname: String,
    /// UDP port the sender receives sleeve datagrams on.
    pub udp_port: u16,
    /// The sender's pod MTU, for status and consistency checks.
    pub pod_mtu: u32,
    /// The sender's pod CIDR (`--pod-cidr`), when it runs cluster IPAM; peers must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<crate::ipam::Block>,
    /// The sender's IPv6 pod CIDR on a dual-stack cluster (a second `--pod-cidr`): every pod's
    /// IPv6 address is mapped from its IPv4 one into it, so it needs no agreement of its own, but
    /// peers must have the same one. Absent from routers before dual-stack pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6: Option<crate::ipam::Block>,
    /// The sender's IPAM block size (prefix length), when it runs cluster IPAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_prefix: Option<u8>,
    /// The sender's host key ([`crate::sign`]); absent from routers before host keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PublicKey>,
    /// With a secret: the sender's signature of [`Hello::signed_body`] for this connection, which
    /// binds its name to its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<Signature>,
    /// The sender's wall clock when it sent the hello, in Unix milliseconds: the receiver
    /// estimates the clock offset between the hosts from it (`weft doctor`'s clock check).
    /// Absent from routers before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// The AEADs the sender can seal the sleeve with, in its order of preference
    /// ([`crate::cipher`]). Absent from routers before the negotiation: ChaCha20-Poly1305 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ciphers: Vec<String>,
}

impl Hello {
    /// What a hello's signature covers: the connection's binding (from the Noise handshake hash,
    /// the same at both ends and new on every connection), which end sent it, and the sender's
    /// name and run id. A hello cannot be replayed on another connection, reflected to its
    /// sender or moved to another name.
    pub fn signed_body(binding: &[u8; 32], initiator: bool, name: u64, uid: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + 1 + 16);
        b.extend_from_slice(binding);
        b.push(u8::from(initiator));
        b.extend_from_slice(&name.to_be_bytes());
        b.extend_from_slice(&uid.to_be_bytes());
        b
    }

    /// Adds our key, and with a connection binding our signature (`initiator`: we dialled).
    pub fn sign(&mut self, key: &HostKey, binding: Option<&[u8; 32]>, initiator: bool) {
        self.key = Some(key.public());
        self.sig = binding.map(|b| {
            key.sign(
                HELLO_DOMAIN,
                &Self::signed_body(b, initiator, self.name, self.uid),
            )
        });
    }

    /// Whether the hello's signature verifies for this connection (`initiator`: the sender
    /// dialled). False without a key or a signature.
    pub fn signature_verifies(&self, binding: &[u8; 32], initiator: bool) -> bool {
        match (&self.key, &self.sig) {
            (Some(k), Some(s)) => crate::sign::verify(
                k,
                HELLO_DOMAIN,
                &Self::signed_body(binding, initiator, self.name, self.uid),
                s,
            ),
            _ => false,
        }
    }

    /// The sender's name.
    pub fn peer_name(&self) -> PeerName {
        PeerName(self.name)
    }

    /// How the sender runs IPAM, as shown in errors: `10.32.0.0/12 in /24 blocks` or `no IPAM`.
    pub fn describe_ipam(&self) -> String {
        let six = self
            .pod_cidr6
            .map(|c| format!(" and IPv6 pod CIDR {c}"))
            .unwrap_or_default();
        match (self.pod_cidr, self.block_prefix) {
            (Some(c), Some(p)) => format!("pod CIDR {c} in /{p} blocks{six}"),
            (Some(c), None) => format!("pod CIDR {c}{six}"),
            _ => "no IPAM (no --pod-cidr)".into(),
        }
    }

    /// Refuses a peer whose IPAM settings differ from ours (one with IPAM and one without
    /// included).
    pub fn check_ipam(&self, theirs: &Hello) -> Result<(), Error> {
        if (self.pod_cidr, self.block_prefix, self.pod_cidr6)
            != (theirs.pod_cidr, theirs.block_prefix, theirs.pod_cidr6)
        {
            return Err(Error::IpamMismatch {
                ours: self.describe_ipam(),
                theirs: theirs.describe_ipam(),
            });
        }
        Ok(())
    }
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The handshake.
    Hello(Hello),
    /// Sent every heartbeat interval; silence for the dead interval closes the connection.
    Heartbeat,
    /// Sent before a deliberate close, with the reason.
    Goodbye {
        /// Why the sender closes.
        reason: String,
    },
    /// Topology gossip (see [`crate::core`]).
    Gossip(crate::core::GossipMsg),
    /// Encrypted clusters: new data key material for key generation `epoch`, from the dialer of
    /// the connection (only sent over the encrypted channel).
    Rekey {
        /// The key generation proposed.
        epoch: u8,
        /// 32 random bytes, hex.
        material: String,
    },
    /// The answer to [`Message::Rekey`]: the responder installed the keys.
    RekeyAck {
        /// The key generation installed.
        epoch: u8,
    },
    /// Encrypted clusters, from [`HANDOVER_VERSION`]: the dialler of this connection accepts the
    /// data keys of its handshake under key generation `epoch` (it still sends with its old keys);
    /// the listener may send with them.
    Handover {
        /// The key generation the keys are known by.
        epoch: u8,
    },
    /// The answer to [`Message::Handover`]: the listener installed the keys and sends with them.
    HandoverAck {
        /// The key generation installed.
        epoch: u8,
    },
    /// Clusters without a secret: how long ago the receiver's last kernel VXLAN probe reached
    /// the sender (`None`: never, or too long ago to remember). Sent every second.
    Probe {
        /// Milliseconds.
        age_ms: Option<u64>,
    },
    /// Cluster IPAM (see [`crate::ipam`]).
    Ipam(crate::ipam::IpamMsg),
    /// From [`TRACE_VERSION`]: watch for a `weft trace --live` probe (see [`crate::trace`]).
    TraceArm(crate::trace::Arm),
    /// From [`TRACE_VERSION`]: the answer to [`Message::TraceArm`] once the sender watches
    /// (the prober sends only then); a refusal is a [`Message::TraceReport`] with the reason.
    TraceArmed {
        /// The arm's identifier.
        id: u64,
    },
    /// From [`TRACE_VERSION`]: what the sender saw of a probe it was armed for.
    TraceReport(crate::trace::Report),
}

/// Frames `msg` for the wire: length prefix and JSON body.
pub fn encode(msg: &Message) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a length prefix.
pub fn decode_len(prefix: [u8; 4]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(Error::MessageTooLarge(len));
    }
    if len == 0 {
        return Err(Error::Malformed("empty message".into()));
    }
    Ok(len)
}

/// Decodes a message body.
pub fn decode_body(body: &[u8]) -> Result<Message, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Malformed(e.to_string()))
}

/// Picks the protocol version for a connection: the highest one both sides speak.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<u16, Error> {
    if theirs.protocol != PROTOCOL {
        return Err(Error::NotWeft(theirs.protocol.clone()));
    }
    let low = ours.min_version.max(theirs.min_version);
    let high = ours.max_version.min(theirs.max_version);
    if low > high {
        return Err(Error::IncompatibleVersion {
            our_min: ours.min_version,
            our_max: ours.max_version,
            their_min: theirs.min_version,
            their_max: theirs.max_version,
        });
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn hello(name: u64, uid: u64) -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            name,
            uid,
            nickname: format!("host{name}"),
            udp_port: 6783,
            pod_mtu: 1436,
            pod_cidr: None,
            pod_cidr6: None,
            block_prefix: None,
            key: None,
            sig: None,
            time_ms: None,
            ciphers: Vec::new(),
        }
    }

    #[test]
    fn frames_round_trip() {
        for msg in [
            Message::Hello(hello(1, 2)),
            Message::Heartbeat,
            Message::Goodbye {
                reason: "shutdown".into(),
            },
            Message::Gossip(crate::core::GossipMsg::Summary {
                summary: 7,
                count: 3,
            }),
        ] {
            let bytes = encode(&msg);
            let len = decode_len(bytes[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(decode_body(&bytes[4..]).unwrap(), msg);
        }
    }

    #[test]
    fn the_cipher_list_is_optional_and_in_order() {
        // A hello from a router before the negotiation has no list: ChaCha20-Poly1305 only.
        let old = r#"{"type":"hello","protocol":"weft","min_version":1,"max_version":2,"name":1,"uid":2,"nickname":"a","udp_port":1,"pod_mtu":1}"#;
        let Message::Hello(h) = decode_body(old.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(h.ciphers.is_empty());
        assert_eq!(
            crate::cipher::parse_offer(&h.ciphers),
            vec![vswitch::Aead::ChaCha20Poly1305]
        );
        // Ours carries it, in order; an empty one is not sent at all.
        let mut a = hello(1, 1);
        let json = String::from_utf8(encode(&Message::Hello(a.clone()))[4..].to_vec()).unwrap();
        assert!(!json.contains("ciphers"), "{json}");
        a.ciphers = vec!["aes-256-gcm".into(), "chacha20-poly1305".into()];
        let json = String::from_utf8(encode(&Message::Hello(a.clone()))[4..].to_vec()).unwrap();
        assert!(
            json.contains(r#""ciphers":["aes-256-gcm","chacha20-poly1305"]"#),
            "{json}"
        );
        assert_eq!(decode_body(json.as_bytes()).unwrap(), Message::Hello(a));
    }

    #[test]
    fn ipam_fields_are_optional_and_compared() {
        // A hello from a build without IPAM fields still decodes.
        let old = r#"{"type":"hello","protocol":"weft","min_version":1,"max_version":1,"name":1,"uid":2,"nickname":"a","udp_port":1,"pod_mtu":1}"#;
        let Message::Hello(h) = decode_body(old.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(h.pod_cidr, None);
        let mut a = hello(1, 1);
        let mut b = hello(2, 2);
        assert!(a.check_ipam(&b).is_ok());
        a.pod_cidr = Some("10.32.0.0/12".parse().unwrap());
        a.block_prefix = Some(24);
        let e = a.check_ipam(&b).unwrap_err().to_string();
        assert!(e.contains("10.32.0.0/12") && e.contains("no IPAM"), "{e}");
        b.pod_cidr = Some("10.48.0.0/12".parse().unwrap());
        b.block_prefix = Some(24);
        let e = a.check_ipam(&b).unwrap_err().to_string();
        assert!(
            e.contains("10.32.0.0/12") && e.contains("10.48.0.0/12"),
            "{e}"
        );
        // A dual-stack peer and an IPv4-only one disagree, and both CIDRs are named.
        let mut d = a.clone();
        d.pod_cidr6 = Some("fd10:32::/48".parse().unwrap());
        let e = a.check_ipam(&d).unwrap_err().to_string();
        assert!(e.contains("fd10:32::/48"), "{e}");
        assert!(d.check_ipam(&d.clone()).is_ok());
        b.pod_cidr = a.pod_cidr;
        b.block_prefix = Some(26);
        assert!(a.check_ipam(&b).unwrap_err().to_string().contains("/26"));
        b.block_prefix = Some(24);
        assert!(a.check_ipam(&b).is_ok());
        let msg = Message::Hello(a);
        assert_eq!(decode_body(&encode(&msg)[4..]).unwrap(), msg);
    }

    #[test]
    fn heartbeat_bytes() {
        assert_eq!(
            encode(&Message::Heartbeat),
            b"\0\0\0\x14{\"type\":\"heartbeat\"}"
        );
    }

    #[test]
    fn rejects_oversize_and_empty() {
        assert!(matches!(
            decode_len(((MAX_MESSAGE_LEN + 1) as u32).to_be_bytes()),
            Err(Error::MessageTooLarge(_))
        ));
        assert!(decode_len([0; 4]).is_err());
        assert!(decode_len([b'G', b'E', b'T', b' ']).is_err());
    }

    #[test]
    fn negotiates_highest_common_version() {
        let mut a = hello(1, 1);
        let mut b = hello(2, 2);
        a.min_version = 1;
        a.max_version = 3;
        b.min_version = 2;
        b.max_version = 5;
        assert_eq!(negotiate(&a, &b).unwrap(), 3);
        b.min_version = 4;
        assert!(matches!(
            negotiate(&a, &b),
            Err(Error::IncompatibleVersion { .. })
        ));
        b.protocol = "weave".into();
        assert!(matches!(negotiate(&a, &b), Err(Error::NotWeft(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body(&bytes);
            if bytes.len() >= 4 {
                let _ = decode_len(bytes[..4].try_into().unwrap());
            }
        }

        #[test]
        fn hello_round_trips(name in 1u64.., uid in any::<u64>(), nick in "[a-z0-9-]{0,20}", port in any::<u16>()) {
            let mut h = hello(name, uid);
            h.nickname = nick;
            h.udp_port = port;
            let msg = Message::Hello(h);
            let bytes = encode(&msg);
            prop_assert_eq!(decode_body(&bytes[4..]).unwrap(), msg);
        }
    }
}
