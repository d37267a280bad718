#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (committed; rerun only to change them).

sleeve_decap/   plain sleeve datagrams: docs/wire-format.md's example, two records, a heartbeat
encrypted_open/ the reference encrypted datagram of docs/encryption.md and the plain example
ethernet_icmp/  2-byte MTU + an Ethernet frame: IPv4 TCP and ICMP echo with DF, IPv6 TCP, IPv6
                with a hop-by-hop header
"""
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

for target, seeds in SEEDS.items():
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(HERE, target, name), "wb") as f:
            f.write(data)
