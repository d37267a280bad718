#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (committed; rerun only to change them).

sleeve_decap/   plain sleeve datagrams: docs/wire-format.md's example, two records, a heartbeat
encrypted_open/ the reference encrypted datagram of docs/encryption.md and the plain example
ethernet_icmp/  2-byte MTU + an Ethernet frame: IPv4 TCP and ICMP echo with DF, IPv6 TCP, IPv6
                with a hop-by-hop header
cni_config/     network configurations of docs/cni.md (0.4.0, 1.0.0, 1.1.0, a chain's prevResult,
                GC's valid attachments) and CNI_* variables split at NUL
api_body/       one byte for the endpoint + a JSON body of the router's API
ipam_records/   an IPAM state file line, then operations and IpamMsg JSON from neighbours 2 and 3
gossip_core/    lines of connection events, time and control messages (hello, gossip) from peers
secret_file/    secret files: the docs' example, base64, short, padded with whitespace
sleeve_engine/  one control byte (source 10.0.0.x, encrypted cluster, sealed by peer 6) + a plain
                sleeve datagram: relays, broadcasts, heartbeats and answers of the unit tests
tap_offload/    a virtio-net header + a TCP or UDP super-frame (IPv4, IPv6), and frame records of
                UDP datagrams and TCP segments of one flow (for the coalescers)
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

ARP = bytes.fromhex(
    "ffffffffffff02000a2000010806" "0001080006040001" "02000a2000010a200001" "0000000000000a200002"
)
HDR_BCAST = bytes([1, 1, 8, 0]) + bytes.fromhex("0102030405060708") + bytes(8)
DOC_EXAMPLE = HDR_BCAST + struct.pack(">H", len(ARP)) + ARP
TWO_RECORDS = HDR_BCAST + bytes.fromhex("0003aabbcc" "0002ddee")
HEARTBEAT = bytes([1, 2, 8, 0]) + bytes.fromhex("0102030405060708") + bytes.fromhex("1112131415161718")
VECTOR = bytes.fromhex(
    "01010801010203040506070811121314151617180100000000000000"
    "2afe7b547585cdb2012f60744a0df0a0c90b471a781ec6f3c374e73ed792ed637540908f"
    "f08882280d5d495f238cdfd9415df4206521508457c4cbea96"
)
assert len(VECTOR) == 89, len(VECTOR)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(ethertype, payload):
    return bytes.fromhex("02000a200002" "02000a200001") + struct.pack(">H", ethertype) + payload


def ipv4(proto, payload):
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0,
                    bytes([10, 32, 0, 1]), bytes([10, 32, 0, 2]))
    h = h[:10] + struct.pack(">H", checksum(h)) + h[12:]
    return h + payload


def ipv6(next_header, payload):
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd000000000000000000000000000002")
    return struct.pack(">IHBB", 0x60000000, len(payload), next_header, 64) + src + dst + payload


TCP = struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x18, 65535, 0, 0) + bytes(range(100))
ECHO = bytes([8, 0, 0, 0, 0, 1, 0, 1]) + bytes(56)
HOP_BY_HOP = bytes([6, 0, 1, 4, 0, 0, 0, 0])
MTU = struct.pack(">H", 1411)

SEEDS = {
    "sleeve_decap": {"doc_example": DOC_EXAMPLE, "two_records": TWO_RECORDS, "heartbeat": HEARTBEAT},
    "encrypted_open": {"vector": VECTOR, "plain": DOC_EXAMPLE},
    "ethernet_icmp": {
        "ipv4_tcp_df": MTU + eth(0x0800, ipv4(6, TCP)),
        "ipv4_echo_df": MTU + eth(0x0800, ipv4(1, ECHO)),
        "ipv6_tcp": MTU + eth(0x86DD, ipv6(6, TCP)),
        "ipv6_hop_by_hop": MTU + eth(0x86DD, ipv6(0, HOP_BY_HOP + TCP)),
    },
}


def js(value):
    return json.dumps(value, separators=(",", ":")).encode()


# cni_config
PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "vw0123456789", "mac": "02:00:00:00:00:01"},
                   {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"}],
    "ips": [{"address": "10.32.0.2/12", "gateway": "10.32.0.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.32.0.1"}],
    "dns": {"nameservers": ["10.96.0.10"]},
}
CNI = {
    "minimal": js({"cniVersion": "1.0.0", "name": "weft", "type": "weft-cni"}),
    "options": js({"cniVersion": "1.1.0", "name": "weft", "type": "weft-cni", "stateDir": "/run/weft",
                   "mtu": 1376, "logFile": "/var/log/weft-cni.log", "dns": {"nameservers": ["10.0.0.10"]}}),
    "prev_result": js({"cniVersion": "1.0.0", "name": "weft", "type": "weft-cni", "prevResult": PREV}),
    "v040_prev": js({"cniVersion": "0.4.0", "name": "weft", "type": "weft-cni",
                     "prevResult": dict(PREV, cniVersion="0.4.0",
                                        ips=[dict(PREV["ips"][0], version="4")])}),
    "gc": js({"cniVersion": "1.1.0", "name": "weft", "type": "weft-cni",
              "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
    "env": b"ADD\0abc-1.2_x\0/run/netns/p\0eth0",
}

# api_body
API = {
    "allocate": b"\x00" + js({"container_id": "c1", "ifname": "eth0", "netns": "/run/netns/p"}),
    "release": b"\x01" + js({"container_id": "c1", "ifname": "eth0"}),
    "gc": b"\x02" + js({"keep": [{"container_id": "c1", "ifname": "eth0"}]}),
    "guard": b"\x03" + js({"container_id": "c1", "ifname": "eth0",
                           "port": {"name": "vw0123456789", "mac": "02:42:AC:11:00:02"}}),
    # A sign inside a MAC pair (found by the fuzzer, refused since): api/src/check.rs.
    "guard_plus_sign": b"\x03" + js({"container_id": "c0", "ifname": "eth0",
                                     "port": {"name": "v12", "mac": "06:42:AC:+1:00:02"}}),
    "leave_empty": b"\x04",
    "leave_force": b"\x04" + js({"force": True}),
    "connect": b"\x05" + js({"addr": "10.0.0.2:6783"}),
    "allocation": b"\x06" + js({"address": "10.32.0.2", "prefix_len": 12, "gateway": "10.32.0.1",
                                "cidr": "10.32.0.0/12", "mtu": 1376, "bridge": "weft"}),
    "ipam_report": b"\x07" + js({"ready": True, "reason": "", "cidr": "10.32.0.0/12", "bridge": "weft",
                                 "mtu": 1376, "reservations": [
                                     {"container_id": "c1", "ifname": "eth0", "address": "10.32.0.2",
                                      "netns": "/x", "port": {"name": "vw01", "mac": "02:00:00:00:00:01"}}]}),
    "api_error": b"\x08" + js({"error": "try later", "retry": True}),
}


# ipam_records: peer 1 claims, 2 and 3 vote (the scan offset of ipam/rules.rs mix()).
def mix(x):
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


OURS = "10.32.%d.0/24" % (mix(1) % 256)


def ipam_rec(name, ver, claims=(), votes=(), reclaim=(), reclaimed=(), inc=0, left=False):
    return {"name": name, "nick": "h%d" % name, "inc": inc, "ver": ver, "claims": list(claims),
            "votes": list(votes), "reclaim": list(reclaim), "reclaimed": list(reclaimed), "left": left}


def records(*recs):
    return js({"kind": "records", "records": list(recs)})


def lines(*parts):
    return b"\n".join(p if isinstance(p, bytes) else p.encode() for p in parts)


STATE = js({"cidr": "10.32.0.0/16", "block_prefix": 24, "lost": ["10.32.9.0/24"], "records": [
    ipam_rec(1, 7, claims=[["10.32.5.0/24", 3, True]], votes=[["10.32.5.0/24", 1, 3]]),
    ipam_rec(2, 4, claims=[["10.32.6.0/24", 2, True]], votes=[["10.32.5.0/24", 1, 3]]),
]})
IPAM = {
    "claim_won": lines(b"", "A", "B", "r", "c",
                       b"a" + records(ipam_rec(2, 3, votes=[[OURS, 1, 2]])),
                       b"b" + records(ipam_rec(3, 3, votes=[[OURS, 1, 2]])), "t"),
    "claim_lost": lines(b"", "A", "B", "r", "c",
                        b"a" + records(ipam_rec(2, 5, claims=[[OURS, 4, True]], votes=[[OURS, 2, 4]])), "t"),
    "own_record_back": lines(b"", "A", b"a" + records(ipam_rec(1, 40, claims=[["10.32.7.0/24", 30, True]])),
                             "t"),
    "reclaim": lines(STATE, "A", "B", "r", b"a" + records(ipam_rec(2, 5, reclaim=[[3, 0]])), "u", "T", "T",
                     b"b" + records(ipam_rec(3, 9, reclaimed=[[2, 0]])), "t"),
    "anti_entropy": lines(STATE, "A", "t", "t", b"a" + js({"kind": "digest", "entries": [[1, 0, 1], [2, 0, 9], [3, 0, 1]]}),
                          b"a" + js({"kind": "request", "names": [1, 2, 3]}),
                          b"a" + js({"kind": "ack", "name": 1, "incarnation": 0, "version": 8})),
    # Our own record at the end of the version range (the crash fixed in gossip/src/ipam/sync.rs).
    "max_version": lines(b"", "A", b"a" + records({"name": 1, "inc": 0, "ver": 2**64 - 1}), "t"),
    "leave": lines(STATE, "A", "B", "r", "x", "l", b"b" + js({"kind": "ack", "name": 1, "incarnation": 0, "version": 10})),
}


# gossip_core
def peer_rec(name, version, conns):
    return {"name": name, "uid": name * 1000, "version": version, "nickname": "h%d" % name,
            "conns": [[c, "10.0.0.%d:6783" % c, True] for c in conns]}


def gossip(p, msg):
    return b"m%d" % p + js(dict({"type": "gossip"}, **msg))


HELLO = {"type": "hello", "protocol": "weft", "min_version": 1, "max_version": 1, "name": 2, "uid": 2000,
         "nickname": "h2", "udp_port": 6783, "pod_mtu": 1376}
GOSSIP = {
    "full_state": lines("C2", "U2", gossip(2, {"kind": "full", "part": 0, "parts": 1, "records": [
        peer_rec(2, 10, [1, 3]), peer_rec(3, 10, [2, 4]), peer_rec(4, 3, [3])]}), "t", "T", "C3", "U3",
        gossip(3, {"kind": "delta", "records": [peer_rec(3, 11, [1, 2, 4])]}), "D2", "T"),
    "anti_entropy": lines("C2", "C3", gossip(2, {"kind": "summary", "summary": 7, "count": 3}),
                          gossip(2, {"kind": "buckets", "hashes": [0] * 64}),
                          gossip(3, {"kind": "digest", "buckets": [0, 5, 63], "entries": [[1, 1000, 1], [2, 2000, 9]]}),
                          gossip(3, {"kind": "request", "names": [1, 2, 3]}), "T"),
    "hello": lines(b"m2" + js(HELLO), b"m3" + js(dict(HELLO, name=3, pod_cidr="10.32.0.0/12", block_prefix=24)),
                   b"m1" + js(dict(HELLO, name=1, uid=100))),
    "others": lines(b"m2" + js({"type": "heartbeat"}), b"m2" + js({"type": "goodbye", "reason": "bye"}),
                    b"m2" + js({"type": "rekey", "epoch": 1, "material": "00" * 32}),
                    b"m2" + js({"type": "rekey_ack", "epoch": 1}), b"m2" + js({"type": "probe", "age_ms": 5}),
                    b"m2" + js({"type": "ipam", "kind": "ack", "name": 1, "incarnation": 0, "version": 1})),
}

SECRETS = {
    "passphrase": b"correct horse battery staple\n",
    "base64": b"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\n",
    "short": b"  short \n",
    "padded": b"\r\n\t exactly sixteen!\n\n",
    "two_lines": b"first secret of the file\nsecond secret of the file\n",
}


def sleeve(kind, ttl, src, dst, body=b""):
    return bytes([1, kind, ttl, 0]) + struct.pack(">QQ", src, dst) + body


FRAME = struct.pack(">H", len(ARP)) + ARP
HB_BODY = struct.pack(">QQ", 1, 1000) + b"\x00"
ENGINE = {
    "relay_to_5": bytes([2]) + sleeve(1, 3, 2, 5, FRAME),
    "broadcast_from_2": bytes([2]) + sleeve(1, 4, 2, 0, FRAME + b"\x00\x03abc"),
    "unicast_for_us": bytes([3]) + sleeve(1, 1, 3, 1, FRAME),
    "heartbeat": bytes([2]) + sleeve(2, 1, 2, 1, HB_BODY),
    "heartbeat_ack": bytes([3]) + sleeve(3, 1, 3, 1, struct.pack(">QQ", 1, 10) + b"\x01"),
    "sealed_by_6": bytes([6 | 0x10]) + sleeve(1, 1, 6, 1, FRAME),
    "sealed_heartbeat_encrypted": bytes([6 | 0x18]) + sleeve(2, 1, 6, 1, HB_BODY),
    "clear_from_6": bytes([6]) + sleeve(1, 1, 6, 1, FRAME),
    "unknown_encrypted": bytes([7 | 0x08]) + sleeve(1, 1, 9, 1, FRAME),
}



def udp(payload, sport=5000, dport=6000):
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def vnet(gso_type, hdr_len, gso_size, csum_start, csum_offset):
    return struct.pack("<BBHHHH", 1, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def records_of(frames):
    return b"".join(struct.pack(">H", len(f)) + f for f in frames)


TCP_BIG = struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x10, 65535, 0, 0) + bytes(range(256)) * 12
TAP = {
    "tso_v4": vnet(1, 54, 1000, 34, 16) + eth(0x0800, ipv4(6, TCP_BIG)),
    "tso_v6": vnet(4, 74, 1000, 54, 16) + eth(0x86DD, ipv6(6, TCP_BIG)),
    "uso_v4": vnet(5, 42, 1200, 34, 6) + eth(0x0800, ipv4(17, udp(bytes(3000)))),
    "uso_v6": vnet(5, 62, 1200, 54, 6) + eth(0x86DD, ipv6(17, udp(bytes(3000)))),
    # Shorter than a TCP header (a segmenter bug the property tests found).
    "uso_tiny": vnet(5, 42, 1, 34, 6) + eth(0x0800, ipv4(17, udp(bytes(2)))),
    "udp_records": bytes(10) + records_of([eth(0x0800, ipv4(17, udp(bytes([i]) * 100))) for i in range(3)]),
    "tcp_records": bytes(10) + records_of([eth(0x0800, ipv4(6, TCP)) for _ in range(2)]),
}

SEEDS.update({
    "tap_offload": TAP,
    "cni_config": CNI,
    "api_body": API,
    "ipam_records": IPAM,
    "gossip_core": GOSSIP,
    "secret_file": SECRETS,
    "sleeve_engine": ENGINE,
})

for target, seeds in SEEDS.items():
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(HERE, target, name), "wb") as f:
            f.write(data)
