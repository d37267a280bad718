//! The flow-steering program of a multi-queue TAP port: which data plane worker reads a frame.
//!
//! A TAP device with several queues asks a socket-filter eBPF program (`TUNSETSTEERINGEBPF`)
//! for the queue of each frame the bridge sends it; the kernel takes the answer modulo the number
//! of queues. This program hashes what identifies a flow: the IPv4 or IPv6 source and
//! destination addresses and, for TCP and UDP (and an IPv4 packet that is not a fragment), the
//! two ports. Every frame of a flow then goes to one queue, read by one worker, so a flow is never
//! reordered by the sleeve. Anything else (ARP, VLAN-tagged frames, other protocols) goes to
//! queue 0. The hash is symmetric: a flow's replies, read from the TAP port on the other host,
//! go to the queue of the same number there, so with as many workers on both hosts a request
//! and its reply are carried by workers of one number end to end, and the worker that writes a
//! request to a pod often finds the pod's reply before it sleeps.
//!
//! Without a program the kernel's own choice applies ("automq"): by flow too, but it remembers
//! the queue a flow's replies were last written to and sends the flow there, which can move a
//! flow from one worker to another while frames of it are still queued.
//!
//! The receiving side has a program too ([`attach_lane_steering`]): a classic BPF program on the
//! workers' `SO_REUSEPORT` group that picks the socket of each datagram by the lane in its sleeve
//! header (the sending worker's number, `vswitch::wire::sleeve::LANE_MASK`), modulo the number of
//! sockets. One lane, hence one flow, is received by one worker.
//!
//! The TAP program is about fifty instructions written here in eBPF byte code (no compiler, no object
//! file): packet loads (`LD_ABS`, `LD_IND`, which end the program with 0 when a load is out of
//! bounds), XOR, one multiplication to mix the bits, no helpers and no maps.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const ABS: u8 = 0x20;
const IND: u8 = 0x40;
const K: u8 = 0x00;
const X: u8 = 0x08;
const MUL: u8 = 0x20;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JSET: u8 = 0x40;
const EXIT: u8 = 0x90;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// Destination register in the low nibble, source register in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// `r0 = packet[offset]` (big-endian, `size` W, H or B).
const fn ld_abs(size: u8, offset: i32) -> Insn {
    insn(LD | ABS | size, 0, 0, 0, offset)
}

/// `r0 = packet[r_src + offset]`.
const fn ld_ind(size: u8, src: u8, offset: i32) -> Insn {
    insn(LD | IND | size, 0, src, 0, offset)
}

const fn alu64_x(op: u8, dst: u8, src: u8) -> Insn {
    insn(ALU64 | op | X, dst, src, 0, 0)
}

const fn alu64_k(op: u8, dst: u8, imm: i32) -> Insn {
    insn(ALU64 | op | K, dst, 0, 0, imm)
}

const fn alu32_k(op: u8, dst: u8, imm: i32) -> Insn {
    insn(ALU | op | K, dst, 0, 0, imm)
}

const fn exit() -> Insn {
    insn(JMP | EXIT, 0, 0, 0, 0)
}

/// Ethernet header bytes before the IP header.
const ETH: i32 = 14;
/// Knuth's multiplicative hash constant (2^32 / golden ratio), as the instruction's signed field.
const GOLDEN: i32 = 0x9E37_79B1_u32 as i32;

/// Where the IPv6 block starts and where the hash is mixed: the jumps are computed from these,
/// and [`program`] checks that the blocks landed there.
const V6: usize = 24;
const MIX: usize = 46;

/// A conditional jump from the instruction about to be pushed onto `p` to `target`.
fn jump(p: &[Insn], op: u8, imm: i32, target: usize) -> Insn {
    let off = target as i64 - p.len() as i64 - 1;
    insn(JMP | op | K, 0, 0, off as i16, imm)
}

/// The program. r7 accumulates the hash; r8 holds the IPv4 header length for the port load; r6
/// is the packet context the packet loads require.
fn program() -> Vec<Insn> {
    let mut p = vec![
        alu64_x(MOV, 6, 1), // r6 = ctx
        alu64_k(MOV, 7, 0), // r7 = 0
        ld_abs(H, 12),      // r0 = EtherType
    ];
    let v4 = p.len() + 4;
    p.push(jump(&p, JEQ, 0x0800, v4));
    p.push(jump(&p, JEQ, 0x86dd, V6));
    p.extend([alu64_k(MOV, 0, 0), exit()]); // anything else: queue 0
    assert_eq!(p.len(), v4);
    p.extend([
        ld_abs(W, ETH + 12), // source address
        alu64_x(XOR, 7, 0),
        ld_abs(W, ETH + 16), // destination address
        alu64_x(XOR, 7, 0),
        ld_abs(H, ETH + 6), // flags and fragment offset
    ]);
    p.push(jump(&p, JSET, 0x3fff, MIX)); // a fragment: addresses only
    p.push(ld_abs(B, ETH + 9)); // protocol
    let ports4 = p.len() + 3;
    p.push(jump(&p, JEQ, 6, ports4));
    p.push(jump(&p, JEQ, 17, ports4));
    p.push(jump(&p, JA, 0, MIX));
    assert_eq!(p.len(), ports4);
    p.extend([
        ld_abs(B, ETH), // version and header length
        alu64_k(AND, 0, 0x0f),
        alu64_k(LSH, 0, 2),
        alu64_x(MOV, 8, 0), // r8 = header length
        ld_ind(W, 8, ETH),  // both ports
        alu64_x(XOR, 7, 0),
    ]);
    p.push(jump(&p, JA, 0, MIX));
    assert_eq!(p.len(), V6);
    // The two addresses: 8 words from byte 8 of the IPv6 header.
    for word in 0..8 {
        p.push(ld_abs(W, ETH + 8 + 4 * word));
        p.push(alu64_x(XOR, 7, 0));
    }
    p.push(ld_abs(B, ETH + 6)); // next header (extension headers: addresses only)
    let ports6 = p.len() + 3;
    p.push(jump(&p, JEQ, 6, ports6));
    p.push(jump(&p, JEQ, 17, ports6));
    p.push(jump(&p, JA, 0, MIX));
    p.extend([ld_abs(W, ETH + 40), alu64_x(XOR, 7, 0)]); // both ports
    assert_eq!(p.len(), MIX);
    // mix: fold the high half into the low one and keep those 16 bits, multiply, keep the high
    // half (whose every bit depends on all the bits folded); the kernel takes it modulo the
    // number of queues. The fold makes the hash symmetric: the addresses are XORed, and the two
    // ports (the high and low half of one word) meet in the low half, so a flow's two directions
    // hash alike.
    p.extend([
        alu64_x(MOV, 0, 7),
        alu64_k(RSH, 7, 16),
        alu64_x(XOR, 0, 7),
        alu64_k(AND, 0, 0xffff),
        alu32_k(MUL, 0, GOLDEN),
        alu32_k(RSH, 0, 16),
        exit(),
    ]);
    p
}

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to the program's name.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Loads the flow-steering program; its descriptor, for `TUNSETSTEERINGEBPF`.
pub fn load_flow_steering() -> io::Result<OwnedFd> {
    let insns = program();
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"weft_steer");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
    };
    // SAFETY: `attr` is a fully initialised bpf_attr prefix of the size passed; the kernel reads
    // `insns.len()` instructions from `insns`, the NUL-terminated license, and writes at most
    // `log.len()` bytes into `log`; all three outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let verifier = String::from_utf8_lossy(&log[..end]);
        return Err(io::Error::new(
            e.kind(),
            format!("loading the steering program: {e}; {}", verifier.trim()),
        ));
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Classic BPF opcodes (linux/filter.h) for the lane program.
const C_LD_B_ABS: u16 = 0x30;
const C_ALU_RSH_K: u16 = 0x74;
const C_ALU_AND_K: u16 = 0x54;
const C_ALU_MOD_K: u16 = 0x94;
const C_RET_A: u16 = 0x16;

/// The lane program for `sockets` sockets: `(flags >> 4) % sockets`, where `flags` is the fourth
/// byte of the UDP payload (the sleeve header's flags; a shorter datagram ends the program with
/// 0: the first socket).
fn lane_program(sockets: u32) -> [libc::sock_filter; 5] {
    let op = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    [
        op(C_LD_B_ABS, 3),
        op(C_ALU_RSH_K, 4),
        op(C_ALU_AND_K, 0x0f),
        op(C_ALU_MOD_K, sockets.max(1)),
        op(C_RET_A, 0),
    ]
}

/// Attaches the lane program for `sockets` sockets to the `SO_REUSEPORT` group `fd` belongs to
/// (`SO_ATTACH_REUSEPORT_CBPF`). The kernel numbers the group's sockets in the order they were
/// bound, which is the workers' order.
pub fn attach_lane_steering(fd: BorrowedFd<'_>, sockets: u32) -> io::Result<()> {
    let mut prog = lane_program(sockets);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, an initialised array of `len` instructions; both live
    // for the whole call, and the kernel copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jumps_land_on_their_blocks() {
        let p = program();
        // Every jump's target is inside the program.
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == JMP && ins.code != JMP | EXIT {
                let to = i as i64 + 1 + i64::from(ins.off);
                assert!((0..p.len() as i64).contains(&to), "jump at {i} to {to}");
            }
        }
        assert_eq!(p.last(), Some(&exit()));
    }

    /// Runs the program on `frame` the way the kernel does for a TAP's queue choice (the packet
    /// from its Ethernet header): a small interpreter of the instructions the program uses.
    /// 0 where a packet load falls outside the frame, as the kernel returns then.
    fn run(p: &[Insn], frame: &[u8]) -> u32 {
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        let load = |at: i64, size: u8| -> Option<u64> {
            let n = match size {
                W => 4,
                H => 2,
                _ => 1,
            };
            let at = usize::try_from(at).ok()?;
            let b = frame.get(at..at + n)?;
            Some(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        };
        loop {
            let i = p[pc];
            let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm);
            pc += 1;
            match i.code & 0x07 {
                LD => {
                    let at = if i.code & IND != 0 {
                        r[src] as i64 + imm
                    } else {
                        imm
                    };
                    match load(at, i.code & 0x18) {
                        Some(v) => r[0] = v,
                        None => return 0,
                    }
                }
                ALU64 | ALU => {
                    let v = if i.code & X != 0 { r[src] } else { imm as u64 };
                    let a = r[dst];
                    let out = match i.code & 0xf0 {
                        MOV => v,
                        XOR => a ^ v,
                        AND => a & v,
                        LSH => a << v,
                        RSH if i.code & 0x07 == ALU => u64::from((a as u32) >> v),
                        RSH => a >> v,
                        MUL => u64::from((a as u32).wrapping_mul(v as u32)),
                        op => panic!("unexpected ALU op {op:#x}"),
                    };
                    r[dst] = if i.code & 0x07 == ALU {
                        out & 0xffff_ffff
                    } else {
                        out
                    };
                }
                JMP => {
                    let taken = match i.code & 0xf0 {
                        EXIT => return r[0] as u32,
                        JA => true,
                        JEQ => r[dst] == imm as u64,
                        JSET => r[dst] & imm as u64 != 0,
                        op => panic!("unexpected jump {op:#x}"),
                    };
                    if taken {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                class => panic!("unexpected class {class}"),
            }
        }
    }

    /// An Ethernet frame with an IPv4 (or IPv6) header and the first 4 bytes of a TCP or UDP
    /// header.
    fn flow(v6: bool, proto: u8, src: u8, dst: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[6] = proto;
            ip[23] = src;
            ip[39] = dst;
            f.extend_from_slice(&ip);
        } else {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&[10, 32, 1, src]);
            ip[16..20].copy_from_slice(&[10, 32, 2, dst]);
            f.extend_from_slice(&ip);
        }
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    #[test]
    fn flows_hash_symmetrically_and_spread() {
        let p = program();
        for v6 in [false, true] {
            for proto in [6, 17] {
                let mut queues = [[0u32; 2]; 4];
                for sport in 40_000..40_256u16 {
                    let there = run(&p, &flow(v6, proto, 1, 2, sport, 5201));
                    let back = run(&p, &flow(v6, proto, 2, 1, 5201, sport));
                    assert_eq!(there, back, "v6 {v6}, proto {proto}, port {sport}");
                    queues[0][(there % 2) as usize] += 1;
                    queues[1][(there % 4 / 2) as usize] += 1;
                }
                // 256 flows over 2 queues: neither gets fewer than a quarter.
                for q in &queues[..2] {
                    assert!(q.iter().all(|&n| n >= 64), "{q:?}");
                }
            }
        }
    }

    #[test]
    fn what_is_not_a_tcp_or_udp_flow_is_hashed_by_addresses_or_goes_to_queue_0() {
        let p = program();
        // ARP, a VLAN tag, a truncated frame: queue 0.
        let mut arp = flow(false, 6, 1, 2, 1, 2);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&p, &arp), 0);
        arp[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(run(&p, &arp), 0);
        assert_eq!(run(&p, &flow(false, 6, 1, 2, 1, 2)[..20]), 0);
        // ICMP, and the fragments of one datagram: by addresses only, whatever the ports say.
        let icmp = run(&p, &flow(false, 1, 1, 2, 7, 8));
        assert_eq!(icmp, run(&p, &flow(false, 1, 1, 2, 9, 10)));
        let mut frag = flow(false, 17, 1, 2, 7, 8);
        frag[14 + 6] = 0x20; // more fragments
        let mut later = flow(false, 17, 1, 2, 99, 98);
        later[14 + 7] = 0xb9; // offset 185
        assert_eq!(run(&p, &frag), run(&p, &later));
        assert_eq!(run(&p, &frag), icmp);
    }

    #[test]
    fn datagrams_reach_the_socket_of_their_lane() {
        use std::net::UdpSocket;
        use std::os::fd::AsFd;
        use std::time::Duration;
        // Two sockets sharing a port on the loopback address, steered by lane.
        let bind = |port: u16| -> UdpSocket {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.into()
        };
        let first = bind(0);
        let port = first.local_addr().unwrap().port();
        let second = bind(port);
        attach_lane_steering(first.as_fd(), 2).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 32];
        for lane in 0u8..6 {
            let mut d = [1u8, 1, 8, 0, lane];
            d[3] = lane << 4;
            tx.send_to(&d, ("127.0.0.1", port)).unwrap();
            let want = if lane % 2 == 0 { &first } else { &second };
            let (n, _) = want.recv_from(&mut buf).unwrap();
            assert_eq!(
                buf[4], lane,
                "lane {lane} reached the wrong socket ({n} bytes)"
            );
        }
        // Too short for a flags byte: the first socket.
        tx.send_to(&[1, 1], ("127.0.0.1", port)).unwrap();
        assert_eq!(first.recv_from(&mut buf).unwrap().0, 2);
    }

    #[test]
    fn the_kernel_accepts_the_program() {
        if !weft_lab::require_root() {
            return;
        }
        load_flow_steering().unwrap();
    }
}
