//! The CNI environment variables, checked: a missing or malformed variable an operation needs is
//! code 4, naming the variable.

use crate::error::{Failure, INVALID_ENV};

/// The CNI variables of one invocation (unset, empty and non-UTF-8 values are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        }
    }

    fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, Failure> {
        value.as_deref().ok_or_else(|| {
            Failure::new(INVALID_ENV, format!("{name} is not set"))
                .details(format!("the runtime must set {name} for this operation"))
        })
    }

    /// `CNI_CONTAINERID`: letters, digits, `_`, `.` and `-`, starting with a letter or digit.
    pub fn container_id(&self) -> Result<&str, Failure> {
        let id = Env::required(&self.container_id, "CNI_CONTAINERID")?;
        let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(Failure::new(
                INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} is not a valid container id"),
            )
            .details("use letters, digits, '_', '.' and '-', starting with a letter or digit"));
        }
        Ok(id)
    }

    /// `CNI_IFNAME`: a valid Linux interface name.
    pub fn ifname(&self) -> Result<&str, Failure> {
        let name = Env::required(&self.ifname, "CNI_IFNAME")?;
        let ok = name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(Failure::new(
                INVALID_ENV,
                format!("CNI_IFNAME {name:?} is not a valid interface name"),
            )
            .details("at most 15 characters, without '/', ':' or whitespace"));
        }
        Ok(name)
    }

    /// `CNI_NETNS`, required.
    pub fn netns(&self) -> Result<&str, Failure> {
        Env::required(&self.netns, "CNI_NETNS")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cid: &str, ifname: &str) -> Env {
        Env {
            command: Some("ADD".into()),
            container_id: Some(cid.into()),
            netns: None,
            ifname: Some(ifname.into()),
        }
    }

    #[test]
    fn variables_are_checked_and_named() {
        assert_eq!(
            env("abc-1.2_x", "eth0").container_id().unwrap(),
            "abc-1.2_x"
        );
        assert_eq!(env("abc", "net1").ifname().unwrap(), "net1");
        for bad in ["-abc", "a/b", "a b", ".x"] {
            let e = env(bad, "eth0").container_id().unwrap_err();
            assert_eq!(e.code, INVALID_ENV);
            assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
        }
        for bad in ["sixteen-chars-xx", "a/b", "a b", "..", "eth0:1"] {
            let e = env("abc", bad).ifname().unwrap_err();
            assert_eq!(e.code, INVALID_ENV);
            assert!(e.msg.contains("CNI_IFNAME"), "{e}");
        }
        let e = Env::default().netns().unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (INVALID_ENV, "CNI_NETNS is not set")
        );
        let e = Env::default().container_id().unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"));
        let e = Env::default().ifname().unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"));
    }
}
