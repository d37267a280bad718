//! The boundary between the gossip layer's status types and the API's ([`weft_api::status`]):
//! the contract keeps its own copies so that the CLI and the plugin never link the gossip crate,
//! and these conversions keep the JSON the same field for field.

use gossip::driver::{ConnectionStatus, RefusedStatus, TargetState, TargetStatus};
use gossip::ipam::{HostBlocks, IpamStatus};
use weft_api::status as api;

/// A dial target, as the API shows it.
pub fn target(t: TargetStatus) -> api::TargetStatus {
    api::TargetStatus {
        addr: t.addr,
        state: match t.state {
            TargetState::Connecting => api::TargetState::Connecting,
            TargetState::Established { peer } => api::TargetState::Established { peer },
            TargetState::Retrying {
                next_attempt_in_ms,
                last_error,
            } => api::TargetState::Retrying {
                next_attempt_in_ms,
                last_error,
            },
            TargetState::Failed { reason } => api::TargetState::Failed { reason },
        },
        failures: t.failures,
        discovered: t.discovered,
    }
}

/// A control connection, as the API shows it.
pub fn connection(c: ConnectionStatus) -> api::ConnectionStatus {
    api::ConnectionStatus {
        peer: c.peer,
        nickname: c.nickname,
        addr: c.addr,
        outbound: c.outbound,
        version: c.version,
        established_secs: c.established_secs,
    }
}

/// A refused address, as the API shows it.
pub fn refused(r: RefusedStatus) -> api::RefusedStatus {
    api::RefusedStatus {
        addr: r.addr,
        reason: r.reason,
        count: r.count,
        last_secs: r.last_secs,
    }
}

/// The cluster's IPAM view, as the API shows it (blocks written `A.B.C.D/N`).
pub fn cluster_ipam(s: IpamStatus) -> api::ClusterIpam {
    let blocks = |v: Vec<gossip::ipam::Block>| v.iter().map(ToString::to_string).collect();
    api::ClusterIpam {
        cidr: s.cidr.to_string(),
        block_prefix: s.block_prefix,
        held: blocks(s.held),
        hosts: s
            .hosts
            .into_iter()
            .map(|h: HostBlocks| api::HostBlocks {
                peer: h.peer,
                nickname: h.nickname,
                held: blocks(h.held),
                pending: blocks(h.pending),
                reachable: h.reachable,
                unreachable_secs: h.unreachable_secs,
            })
            .collect(),
        members: s.members,
        quorum: s.quorum,
        reachable: s.reachable,
        free_blocks: s.free_blocks,
        grace_secs: s.grace_secs,
        lost: blocks(s.lost),
        incarnation: s.incarnation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's copies serialize exactly as the gossip layer's types do.
    #[test]
    fn conversions_keep_the_json() {
        let t = TargetStatus {
            addr: "10.0.0.2:6783".into(),
            state: TargetState::Retrying {
                next_attempt_in_ms: 1500,
                last_error: "refused".into(),
            },
            failures: 3,
            discovered: true,
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::to_value(target(t.clone())).unwrap()
        );
        let c = ConnectionStatus {
            peer: "00:01".into(),
            nickname: "h1".into(),
            addr: "10.0.0.2:40000".into(),
            outbound: true,
            version: 2,
            established_secs: 9,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(connection(c.clone())).unwrap()
        );
        let r = RefusedStatus {
            addr: "10.0.0.9".into(),
            reason: "wrong secret".into(),
            count: 2,
            last_secs: 1,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(refused(r.clone())).unwrap()
        );
        let b = |s: &str| s.parse::<gossip::ipam::Block>().unwrap();
        let s = IpamStatus {
            cidr: b("10.32.0.0/12"),
            block_prefix: 24,
            held: vec![b("10.32.1.0/24")],
            hosts: vec![HostBlocks {
                peer: "00:02".into(),
                nickname: "h2".into(),
                held: vec![b("10.32.2.0/24")],
                pending: vec![],
                reachable: false,
                unreachable_secs: 40,
            }],
            members: 3,
            quorum: 2,
            reachable: 2,
            free_blocks: 4093,
            grace_secs: 1800,
            lost: vec![b("10.32.9.0/24")],
            incarnation: 2,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::to_value(cluster_ipam(s.clone())).unwrap()
        );
    }
}
