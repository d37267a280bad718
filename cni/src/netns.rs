//! Network namespaces: entering `CNI_NETNS` (and staying in the host's) with a netlink
//! connection there, and turning netlink errors into CNI errors. The netlink operations
//! themselves are in `weft-netlink` ([`weft_netlink::Netlink`]).
//!
//! A netlink socket belongs to the namespace of the thread that opens it, so work inside the
//! pod's namespace runs on a dedicated OS thread ([`Netns::run`]) that enters the namespace with
//! `setns` and then opens its own socket on a small current-thread tokio runtime; the thread ends
//! with the work, so no thread of ours is ever left in (or returned from) a foreign namespace.
//! Host-side work ([`in_host`]) runs the same way on the calling thread, which stays in the
//! namespace the runtime started the plugin in.

use crate::error::{Failure, BAD_NETNS, IO_FAILURE, LINK_FAILURE};
use nix::sched::{setns, CloneFlags};
use std::error::Error;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::thread;
use weft_netlink::Netlink;

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The innermost error of `e`'s chain (for netlink, what the kernel said).
fn root_cause(e: &(dyn Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Turns the error of a [`Netlink`] call into a CNI error.
pub trait OrFailure<T> {
    /// A [`LINK_FAILURE`] whose message is `what` (what was being done) and whose details are
    /// what the kernel said.
    fn or_link_failure<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, Failure>;
}

impl<T, E> OrFailure<T> for Result<T, E>
where
    E: Error + 'static,
{
    fn or_link_failure<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(LINK_FAILURE, what()).details(root_cause(&e)))
    }
}

/// Sets an IPv4 sysctl of interface `ifname` in the calling thread's network namespace
/// (`/proc/sys/net` shows the namespace of the thread that opens it).
pub fn set_if_sysctl(ifname: &str, key: &str, value: &str) -> Result<(), Failure> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/{key}");
    std::fs::write(&path, value).map_err(|e| {
        Failure::new(IO_FAILURE, format!("writing {value} to {path}")).details(e.to_string())
    })
}

/// Sets the IPv6 sysctl `net.ipv6.conf.<ifname>.<key>` in the calling thread's namespace.
pub fn set_if6_sysctl(ifname: &str, key: &str, value: &str) -> Result<(), Failure> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
    std::fs::write(&path, value).map_err(|e| {
        Failure::new(IO_FAILURE, format!("writing {value} to {path}")).details(format!(
            "{e} (a dual-stack pod needs IPv6 in its network namespace)"
        ))
    })
}

/// Runs `f` with a netlink connection opened in the calling thread's namespace, on a new
/// current-thread tokio runtime ([`weft_netlink::block_on`]).
fn block_on<T, F, Fut>(f: F) -> Result<T, Failure>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    // The runtime and the socket fail with "starting a tokio runtime" or "opening a netlink
    // socket" as their outermost context.
    weft_netlink::block_on(|nl| async move { Ok::<_, weft_netlink::Error>(f(nl).await) })
        .map_err(|e| Failure::new(IO_FAILURE, e.to_string()).details(root_cause(&e)))?
}

/// Runs `f` with a netlink connection in the calling thread's (the host's) namespace.
pub fn in_host<T, F, Fut>(f: F) -> Result<T, Failure>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    block_on(f)
}

/// The host's network namespace (the calling thread's), to move links into it.
pub fn host_ns() -> Result<File, Failure> {
    File::open("/proc/thread-self/ns/net").map_err(|e| {
        Failure::new(IO_FAILURE, "opening /proc/thread-self/ns/net").details(e.to_string())
    })
}

/// An opened `CNI_NETNS`.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Opens the namespace at `path`.
    pub fn open(path: &Path) -> Result<Netns, Failure> {
        let file = File::open(path).map_err(|e| {
            Failure::new(
                BAD_NETNS,
                format!("cannot open the network namespace {}", path.display()),
            )
            .details(e.to_string())
        })?;
        Ok(Netns {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Runs `f` with a netlink connection inside this namespace, on a new OS thread that enters
    /// it (and ends when `f` is done).
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let file = self.file.try_clone().map_err(|e| {
            Failure::new(IO_FAILURE, "duplicating the namespace handle").details(e.to_string())
        })?;
        let path = self.path.clone();
        let handle = thread::Builder::new()
            .name("weft-cni-netns".into())
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Failure::new(
                        BAD_NETNS,
                        format!("{} is not a network namespace", path.display()),
                    )
                    .details(format!("setns: {e}"))
                })?;
                block_on(f)
            })
            .map_err(|e| Failure::new(IO_FAILURE, "spawning a thread").details(e.to_string()))?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with a cause, as a `Netlink` call returns one (context over the kernel's word).
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("deleting link 7")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn netlink_errors_become_link_failures_with_the_root_cause() {
        let r: Result<(), Wrapped> = Err(Wrapped(std::io::Error::other("No such device")));
        let f = r.or_link_failure(|| "deleting veth1").unwrap_err();
        assert_eq!(f.code, LINK_FAILURE);
        assert_eq!(f.msg, "deleting veth1");
        assert_eq!(f.details, "No such device");
        let ok: Result<u32, Wrapped> = Ok(3);
        assert_eq!(ok.or_link_failure(|| "unused"), Ok(3));
    }
}
