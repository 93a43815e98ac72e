#!/usr/bin/env python3
"""Regenerate the hand-made seed corpus in corpus/wire/ (python3 gen_corpus.py).

Each frame is built field by field with correct checksums, except the truncated ones.
Files named regress_* are inputs the fuzzer failed on once; this script leaves them alone.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "wire")
DST = bytes.fromhex("020000000001")
SRC = bytes.fromhex("020000000002")
C4, V4 = bytes([10, 0, 0, 1]), bytes([192, 0, 2, 10])
C6 = bytes.fromhex("20010db8000000000000000000000001")
V6 = bytes.fromhex("20010db80000000000000000000000aa")


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(et, payload, tags=()):
    hdr = DST + SRC
    for tpid, vid in tags:
        hdr += struct.pack("!HH", tpid, vid)
    return hdr + struct.pack("!H", et) + payload


def ipv4(proto, payload, src=C4, dst=V4, opts=b"", flags_off=0x4000, ident=0x1234):
    ihl = 5 + len(opts) // 4
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, flags_off, 64, proto, 0, src, dst) + opts
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def ph4(src, dst, proto, n):
    return src + dst + struct.pack("!BBH", 0, proto, n)


def ph6(src, dst, proto, n):
    return src + dst + struct.pack("!IxxxB", n, proto)


def tcp(sport, dport, flags, opts=b"", payload=b"", seq=1000, ack=0):
    off = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65535, 0, 0) + opts + payload


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def l4csum(seg, ph, at, udp_rule=False):
    c = csum(ph + seg)
    if udp_rule and c == 0:
        c = 0xFFFF
    return seg[:at] + struct.pack("!H", c) + seg[at + 2:]


def tcp4(seg, src=C4, dst=V4):
    return l4csum(seg, ph4(src, dst, 6, len(seg)), 16)


def udp4(seg, src=C4, dst=V4):
    return l4csum(seg, ph4(src, dst, 17, len(seg)), 6, True)


def ipv6(nh, payload, src=C6, dst=V6):
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, 64) + src + dst + payload


def icmp6(msg, src=C6, dst=V6):
    return l4csum(msg, ph6(src, dst, 58, len(msg)), 2)


SYN_OPTS = bytes.fromhex("020405b4") + bytes.fromhex("0402080a0000000100000000") + bytes.fromhex("01030307")

frames = {}
frames["tcp4_syn_options"] = eth(0x0800, ipv4(6, tcp4(tcp(40000, 80, 0x02, SYN_OPTS))))
frames["tcp4_ipopts_payload"] = eth(0x0800, ipv4(6, tcp4(tcp(40000, 80, 0x18, payload=b"GET / HTTP/1.0\r\n\r\n", ack=7)), opts=bytes.fromhex("94040000")))
frames["udp4_dns"] = eth(0x0800, ipv4(17, udp4(udp(5353, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03lvs\x00\x00\x01\x00\x01"))))
frames["udp4_no_checksum_padded"] = eth(0x0800, ipv4(17, udp(1000, 2000, b"hi"))) + b"\0" * 12
echo = struct.pack("!BBHHH", 8, 0, 0, 0x77, 1) + b"pingdata"
echo = echo[:2] + struct.pack("!H", csum(echo)) + echo[4:]
frames["icmp4_echo"] = eth(0x0800, ipv4(1, echo))
quoted = ipv4(6, tcp4(tcp(80, 40000, 0x10, payload=b"x" * 1400), src=V4, dst=C4), src=V4, dst=C4)[:28]
fn = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + quoted
fn = fn[:2] + struct.pack("!H", csum(fn)) + fn[4:]
frames["icmp4_frag_needed"] = eth(0x0800, ipv4(1, fn, src=bytes([10, 0, 0, 254])))
frames["vlan_tcp4"] = eth(0x0800, ipv4(6, tcp4(tcp(40001, 443, 0x10, ack=99))), tags=[(0x8100, 100)])
frames["qinq_udp4"] = eth(0x0800, ipv4(17, udp4(udp(1, 2, b"qinq"))), tags=[(0x88A8, 7), (0x8100, 200)])
frames["arp_request"] = eth(0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + SRC + C4 + b"\0" * 6 + V4) + b"\0" * 18
frames["tcp6_syn"] = eth(0x86DD, ipv6(6, l4csum(tcp(40000, 80, 0x02, SYN_OPTS), ph6(C6, V6, 6, 40), 16)))
u = udp(4000, 53, b"six")
u = l4csum(u, ph6(C6, V6, 17, len(u)), 6, True)
hbh = bytes([60, 0, 1, 4, 0, 0, 0, 0])
dst_opts = bytes([17, 0, 1, 4, 0, 0, 0, 0])
frames["udp6_ext_headers"] = eth(0x86DD, ipv6(0, hbh + dst_opts + u))
mc = bytes.fromhex("ff0200000000000000000001ff0000aa")
ns = struct.pack("!BBHI", 135, 0, 0, 0) + V6 + bytes([1, 1]) + SRC
frames["icmp6_neighbor_solicit"] = eth(0x86DD, ipv6(58, icmp6(ns, dst=mc), dst=mc))
na = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + V6 + bytes([2, 1]) + DST
frames["icmp6_neighbor_advert"] = eth(0x86DD, ipv6(58, icmp6(na, src=V6, dst=C6), src=V6, dst=C6))
q6 = ipv6(6, tcp(80, 40000, 0x10, payload=b"y" * 1400), src=V6, dst=C6)[:48]
ptb = struct.pack("!BBHI", 2, 0, 0, 1280) + q6
frames["icmp6_packet_too_big"] = eth(0x86DD, ipv6(58, icmp6(ptb, src=C6, dst=V6), src=C6, dst=V6))
frames["ipv4_first_fragment"] = eth(0x0800, ipv4(17, udp(7, 7, b"a" * 24)[:24], flags_off=0x2000))
frames["ipv4_later_fragment"] = eth(0x0800, ipv4(17, b"b" * 16, flags_off=0x0003))
frag6 = bytes([17, 0]) + struct.pack("!HI", (24 << 3) | 1, 0xABCD)
frames["ipv6_later_fragment"] = eth(0x86DD, ipv6(44, frag6 + b"c" * 16))
frames["truncated_tcp4"] = frames["tcp4_syn_options"][:14 + 20 + 10]
frames["truncated_ipv6"] = frames["tcp6_syn"][:14 + 30]
frames["truncated_vlan"] = frames["vlan_tcp4"][:16]

os.makedirs(OUT, exist_ok=True)
for name, data in frames.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(len(frames), "frames written to", OUT)
