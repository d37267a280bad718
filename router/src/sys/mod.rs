//! The only place in Weft with `unsafe`: thin wrappers over the system calls the standard library
//! and our dependencies do not offer (TAP devices, poll, socket buffer sizes). Each block says
//! why it is sound.

pub mod steer;
pub mod tap;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits until `fd` is writable, at most `timeout`. Returns whether it is.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait([fd], libc::POLLOUT, timeout).map(|[ready]| ready)
}

/// Waits until one of `fds` is readable, at most `timeout` (zero: just look). Returns which are
/// (an error or hang-up on a descriptor counts as readable, so that its read reports it).
pub fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Duration,
) -> io::Result<[bool; N]> {
    wait(fds, libc::POLLIN, timeout)
}

/// `poll` for `events` on every one of `fds`; an interrupted wait reports nothing ready.
fn wait<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    events: libc::c_short,
    timeout: Duration,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    });
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfds` is an initialised array of exactly `N` pollfds that lives for the whole call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(e);
    }
    Ok(pfds.map(|p| p.revents != 0))
}

/// Sets a socket's receive and send buffer sizes, bypassing `net.core.rmem_max`/`wmem_max`
/// (`SO_RCVBUFFORCE`, needs CAP_NET_ADMIN). Falls back to the capped options without it.
pub fn force_socket_buffers(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let val = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, force, val).is_err() {
            setsockopt_int(fd, plain, val)?;
        }
    }
    Ok(())
}

fn setsockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live c_int and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
