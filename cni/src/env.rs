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
    /// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
    pub args: Option<String>,
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
            args: var("CNI_ARGS"),
        }
    }

    /// The pod's identity from `CNI_ARGS` (`K8S_POD_NAMESPACE` and `K8S_POD_NAME`, as kubelet
    /// passes them), when both are there. Other keys are ignored (the convention `IgnoreUnknown`
    /// is implied: runtimes pass keys meant for other plugins). A malformed pair or identity is
    /// code 4, naming it.
    pub fn pod(&self) -> Result<Option<weft_api::ipam::PodRef>, Failure> {
        let Some(args) = self.args.as_deref() else {
            return Ok(None);
        };
        let (mut namespace, mut name) = (None, None);
        for pair in args.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(Failure::new(
                    INVALID_ENV,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                )
                .details("CNI_ARGS is a list of KEY=VALUE pairs separated by ';'"));
            };
            match k {
                "K8S_POD_NAMESPACE" => namespace = Some(v.to_owned()),
                "K8S_POD_NAME" => name = Some(v.to_owned()),
                _ => {}
            }
        }
        let (Some(namespace), Some(name)) = (namespace, name) else {
            return Ok(None);
        };
        let pod = weft_api::ipam::PodRef { namespace, name };
        pod.check()
            .map_err(|e| Failure::new(INVALID_ENV, format!("CNI_ARGS: {e}")))?;
        Ok(Some(pod))
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
            args: None,
        }
    }

    #[test]
    fn the_pod_identity_comes_from_cni_args() {
        let with = |args: &str| Env {
            args: Some(args.into()),
            ..Env::default()
        };
        assert_eq!(Env::default().pod().unwrap(), None);
        let pod = with(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=abc",
        )
        .pod()
        .unwrap()
        .unwrap();
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("x", "a"));
        assert_eq!(
            with("K8S_POD_NAME=a").pod().unwrap(),
            None,
            "half an identity is none"
        );
        for bad in ["K8S_POD_NAMESPACE", "K8S_POD_NAMESPACE=X;K8S_POD_NAME=a"] {
            let e = with(bad).pod().unwrap_err();
            assert_eq!(e.code, INVALID_ENV);
            assert!(e.msg.contains("CNI_ARGS"), "{e}");
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
