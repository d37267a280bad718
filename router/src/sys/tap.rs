//! A TAP device: the router's port on the host bridge. Frames the bridge sends to it are read
//! here; frames written here enter the bridge as if they came from a wire.
//!
//! Opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (Ethernet frames, each behind a 10-byte
//! virtio-net header, no packet-info prefix) and non-blocking, with the checksum and TCP
//! segmentation offloads on (`TUNSETOFFLOAD`: CSUM, TSO4, TSO6, and USO4, USO6 where the kernel
//! has them): the kernel hands us TCP (and UDP) super-frames of up to 64 KiB with partial
//! checksums and takes such frames from us.
//! [`vswitch::offload`] parses the header and segments or coalesces. [`Tap::open_plain`] opens
//! without the header and offloads. The device exists while the file descriptor is open.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// `_IOR('T', 224, int)`: attaches a socket-filter eBPF program that picks the queue.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETLE: libc::c_ulong = 0x4004_54dc;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;
/// The virtio-net header of a frame that needs nothing done (what [`Tap::write`] puts in front).
const NO_OFFLOAD_HDR: [u8; vswitch::offload::VNET_HDR_LEN] = [0; vswitch::offload::VNET_HDR_LEN];

/// `struct ifreq` as TUNSETIFF reads it: the name, the flags, and padding to the kernel's size.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    vnet_hdr: bool,
    uso: bool,
}

impl Tap {
    /// Creates (or attaches to) the TAP device `name` in the calling thread's network namespace,
    /// with the virtio-net header and the checksum and TCP segmentation offloads (without both
    /// when the kernel refuses the offloads).
    pub fn open(name: &str) -> io::Result<Tap> {
        Tap::open_with_offloads(name, true)
    }

    /// [`Tap::open`] when `offloads` is true, [`Tap::open_plain`] when it is false (the caller's
    /// choice: `weft router` turns them off when `WEFT_BENCH_DISABLE` lists `tso`).
    pub fn open_with_offloads(name: &str, offloads: bool) -> io::Result<Tap> {
        Tap::open_queue(name, offloads, false)
    }

    /// Opens `queues` queues of the TAP device `name` (one per data plane worker), with the
    /// offloads as [`Tap::open_with_offloads`] sets them. More than one: the device is
    /// multi-queue (`IFF_MULTI_QUEUE`) and the eBPF program of [`super::steer`] picks the queue
    /// of each frame the bridge sends us by its flow, so one flow is always read by one worker.
    /// Without the program (the kernel refused it, reported) the kernel's own choice applies:
    /// by flow too, but a flow may move to the queue its replies were last written to.
    pub fn open_queues(name: &str, queues: usize, offloads: bool) -> io::Result<Vec<Tap>> {
        if queues <= 1 {
            return Ok(vec![Tap::open_with_offloads(name, offloads)?]);
        }
        let mut taps = Vec::with_capacity(queues);
        for _ in 0..queues {
            taps.push(Tap::open_queue(name, offloads, true)?);
        }
        if taps
            .iter()
            .any(|t| (t.vnet_hdr, t.uso) != (taps[0].vnet_hdr, taps[0].uso))
        {
            // The offloads were refused for some queues: every queue goes without them.
            drop(taps);
            return (0..queues)
                .map(|_| Tap::create(name, false, true))
                .collect();
        }
        // The device takes its own reference to the program: our descriptor may close after.
        let steering = super::steer::load_flow_steering()
            .and_then(|prog| taps[0].ioctl_int_ptr(TUNSETSTEERINGEBPF, prog.as_raw_fd()));
        if let Err(e) = steering {
            tracing::warn!("TAP flow steering unavailable ({e}): the kernel picks the queues");
        }
        Ok(taps)
    }

    fn open_queue(name: &str, offloads: bool, multi: bool) -> io::Result<Tap> {
        if !offloads {
            return Tap::create(name, false, multi);
        }
        let mut tap = Tap::create(name, true, multi)?;
        // The header's fields are little-endian (already so on little-endian hosts; kernels
        // without the ioctl use the host's order, which is then little-endian too on x86/arm).
        let _ = tap.ioctl_int_ptr(TUNSETVNETLE, 1);
        let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        // UDP segmentation (USO, Linux 6.2+) when the kernel has it, unless the bench switch
        // turns it off; TCP's alone otherwise.
        let uso = !crate::dataplane::disabled("uso")
            && tap
                .ioctl_value(TUNSETOFFLOAD, tso | TUN_F_USO4 | TUN_F_USO6)
                .is_ok();
        if !uso {
            if let Err(e) = tap.ioctl_value(TUNSETOFFLOAD, tso) {
                // Without offloads the header only costs: start again without it.
                tracing::warn!("TAP offloads unavailable ({e}); one frame per read and write");
                drop(tap);
                return Tap::create(name, false, multi);
            }
        }
        tap.uso = uso;
        Ok(tap)
    }

    /// Creates (or attaches to) the TAP device `name` without the virtio-net header: one plain
    /// Ethernet frame per read and write, no offloads.
    pub fn open_plain(name: &str) -> io::Result<Tap> {
        Tap::create(name, false, false)
    }

    /// An ioctl that takes its argument by value (TUNSETOFFLOAD: an unsigned long).
    fn ioctl_value(&self, request: libc::c_ulong, value: libc::c_ulong) -> io::Result<()> {
        // SAFETY: the request takes its argument by value; nothing is read through it.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, value) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// An ioctl that reads one int through its argument (TUNSETVNETLE, TUNSETSTEERINGEBPF).
    fn ioctl_int_ptr(&self, request: libc::c_ulong, value: libc::c_int) -> io::Result<()> {
        // SAFETY: the request reads one int through the pointer, which points at `value`, alive
        // for the whole call.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                request as _,
                &value as *const libc::c_int,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn create(name: &str, vnet_hdr: bool, multi: bool) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to 15 bytes"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP
                | IFF_NO_PI
                | if vnet_hdr { IFF_VNET_HDR } else { 0 }
                | if multi { IFF_MULTI_QUEUE } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `file` is an open /dev/net/tun descriptor, and TUNSETIFF reads (and writes back
        // the name into) an ifreq-sized buffer, which `req` is and which outlives the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap {
            file,
            name: name.to_string(),
            vnet_hdr,
            uso: false,
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if the kernel takes and hands over UDP super-frames (`GSO_UDP_L4`: USO on, Linux
    /// 6.2+).
    pub fn uso(&self) -> bool {
        self.uso
    }

    /// True if every frame read or written has a virtio-net header in front.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Reads one frame, behind its virtio-net header when [`Tap::vnet_hdr`]; `WouldBlock` when
    /// none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one complete Ethernet frame (with a header saying "nothing to do" in front when
    /// the device has virtio-net headers). Returns the frame bytes written.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        if self.vnet_hdr {
            let n = (&self.file)
                .write_vectored(&[IoSlice::new(&NO_OFFLOAD_HDR), IoSlice::new(frame)])?;
            Ok(n.saturating_sub(NO_OFFLOAD_HDR.len()))
        } else {
            (&self.file).write(frame)
        }
    }

    /// Writes `buf` as it is: a virtio-net header and its frame when [`Tap::vnet_hdr`].
    pub fn write_raw(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
