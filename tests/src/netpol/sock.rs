//! Stream sockets of any IPv4 protocol (TCP, SCTP) through libc, since std only makes TCP ones:
//! the servers and the prober use these for TCP too, so the code the SCTP probes would run is the
//! code every TCP probe runs. Also `poll(2)` over a few descriptors, for the servers' loops.
//!
//! Every socket is created on the calling thread, so in that thread's network namespace.

use std::io;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `IPPROTO_TCP`.
pub const TCP: libc::c_int = libc::IPPROTO_TCP;
/// `IPPROTO_SCTP`.
pub const SCTP: libc::c_int = libc::IPPROTO_SCTP;

/// Whether the kernel gives this thread's namespace a stream socket of `proto` (SCTP is missing
/// when the kernel has no SCTP module).
pub fn available(proto: libc::c_int) -> bool {
    socket(proto, false).is_ok()
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new `AF_INET` `SOCK_STREAM` socket of protocol `proto`, close-on-exec.
fn socket(proto: libc::c_int, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, ty, proto) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A listening stream socket of `proto` bound to `addr` (`SO_REUSEADDR`), as a [`TcpListener`]
/// (its `accept` works for one-to-one SCTP sockets too).
pub fn listen(proto: libc::c_int, addr: SocketAddrV4) -> io::Result<TcpListener> {
    let fd = socket(proto, false)?;
    let one: libc::c_int = 1;
    let sa = sockaddr(addr);
    // SAFETY: `fd` is open; `one` and `sa` are locals that outlive the calls, which only read
    // them, with their true sizes.
    unsafe {
        cvt(libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))?;
        cvt(libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            SOCKADDR_LEN,
        ))?;
        cvt(libc::listen(fd.as_raw_fd(), 128))?;
    }
    Ok(TcpListener::from(fd))
}

/// Connects a new stream socket of `proto` to `addr` within `timeout`, as a blocking
/// [`TcpStream`]. A refusal, an unreachable network and the timeout are errors.
pub fn connect(proto: libc::c_int, addr: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let fd = socket(proto, true)?;
    let sa = sockaddr(addr);
    // SAFETY: `fd` is open; `sa` outlives the call, which only reads it.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            SOCKADDR_LEN,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        // SAFETY: `fd` stays open for the whole call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
        let ready = poll(&[(borrowed, libc::POLLOUT)], timeout)?;
        if !ready[0] {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are locals the kernel writes within their sizes.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    let s = TcpStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Waits up to `timeout` for any of `fds` to have one of its `events`; which of them do (an
/// error or hang-up counts as ready, so that the caller's next call reports it).
pub fn poll(fds: &[(BorrowedFd<'_>, libc::c_short)], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *events,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `pfds` is a live array of `pfds.len()` entries the kernel writes `revents` of;
        // the descriptors are borrowed for the whole call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}
