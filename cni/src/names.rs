//! The host end of a pod's veth pair is named after the attachment (container id + interface
//! name), so that DEL and GC find it without any state: `vw` + 10 hex digits of a 64-bit FNV-1a
//! hash (12 characters, under Linux's 15).

/// The prefix of every host-end name.
pub const HOST_PREFIX: &str = "vw";
/// Hex digits after the prefix.
const HEX_DIGITS: usize = 10;

/// 64-bit FNV-1a: a fixed, documented hash, so the name never changes between builds.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The host-end name for an attachment.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    // The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
    let h = fnv1a64(&[container_id.as_bytes(), b"\0", ifname.as_bytes()]);
    format!("{HOST_PREFIX}{:010x}", h >> (64 - 4 * HEX_DIGITS))
}

/// Whether `name` has the form of a host-end name (GC only deletes those).
pub fn is_host_ifname(name: &str) -> bool {
    name.len() == HOST_PREFIX.len() + HEX_DIGITS
        && name.starts_with(HOST_PREFIX)
        && name[HOST_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let a = host_ifname("abc123", "eth0");
        assert_eq!(a.len(), 12);
        assert!(a.len() <= 15);
        assert!(is_host_ifname(&a), "{a}");
        // Stable: the same inputs give the same name (and this exact one, so that a change of
        // the hash, which would orphan every existing host end, fails here).
        assert_eq!(a, host_ifname("abc123", "eth0"));
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(a, host_ifname("abc123", "eth1"));
        assert_ne!(a, host_ifname("abc124", "eth0"));
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
        let long = "f".repeat(200);
        assert_eq!(host_ifname(&long, "net1").len(), 12);
    }

    #[test]
    fn only_our_form_is_recognised() {
        assert!(is_host_ifname("vw0123456789"));
        assert!(is_host_ifname("vwabcdef0123"));
        assert!(!is_host_ifname("vw012345678"));
        assert!(!is_host_ifname("vw0123456789a"));
        assert!(!is_host_ifname("vwABCDEF0123"));
        assert!(!is_host_ifname("vx0123456789"));
        assert!(!is_host_ifname("vh1p1"));
        assert!(!is_host_ifname("weft"));
    }
}
