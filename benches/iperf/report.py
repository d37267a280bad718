#!/usr/bin/env python3
"""Turns the raw output of benches/iperf/run.sh into results (standard library only).

    report.py row --row KEY --label TEXT --status ok|na|failed --dir ROW_DIR --results FILE
        reads ROW_DIR (ping.txt, iperf-1.json, iperf-4.json, cpu-1.txt, cpu-4.txt, udp-1400.json,
        udp-64.json and other udp-N.json, cpu-udp-*.txt, rr.txt, service.json, service.err, na, error, pod_mtu,
        path_mtu, dst_ip), appends one JSON object to FILE and prints a one-line summary to stderr
    report.py bytes IPERF_JSON
        prints the bytes the iperf3 server received
    report.py final --results FILE --json OUT [--time N ...]
        prints the tables and issue 15's targets, and writes OUT: the rows plus date, kernel,
        nproc, CPU model and the targets
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys

BASELINE = "vxlan"  # the row the ratio column compares with


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def ping_stats(text):
    """RTT samples from `ping` output ("time=0.123 ms" per reply): median and p99.

    p99 is the nearest-rank percentile: the ceil(0.99 n)-th smallest sample (with 200 samples,
    the 198th), so it is always a measured value.
    """
    if text is None:
        return None
    samples = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", text))
    sent = re.search(r"(\d+) packets transmitted", text)
    sent = int(sent.group(1)) if sent else None
    if not samples:
        return {"samples": 0, "sent": sent, "error": text.strip().splitlines()[-1:] or "no reply"}
    n = len(samples)
    return {
        "samples": n,
        "sent": sent,
        "lost": (sent - n) if sent is not None else None,
        "median_ms": round(statistics.median(samples), 4),
        "p99_ms": round(samples[math.ceil(0.99 * n) - 1], 4),
        "min_ms": samples[0],
        "max_ms": samples[-1],
    }


def iperf_json(path):
    """The document `iperf3 --json` wrote, or {"error": why} when there is none."""
    text = read(path)
    if not text:
        return {"error": "no iperf3 output"}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {"error": "iperf3 output is not JSON: " + text.strip()[:200]}
    if doc.get("error"):
        return {"error": "iperf3: " + doc["error"]}
    return doc


def iperf_result(path):
    """Throughput the server received, from `iperf3 --json`."""
    doc = iperf_json(path)
    if "error" in doc:
        return doc
    end = doc.get("end", {})
    recv, sent = end.get("sum_received", {}), end.get("sum_sent", {})
    if not recv.get("bytes"):
        return {"error": "iperf3 received nothing"}
    return {
        "gbit_per_s": recv["bits_per_second"] / 1e9,
        "bytes": recv["bytes"],
        "seconds": recv["seconds"],
        "retransmits": sent.get("retransmits"),
        "streams": len(doc.get("start", {}).get("connected", [])) or None,
    }


def udp_result(path, length):
    """What the iperf3 server received from a UDP flow of `length`-byte datagrams (-b 0)."""
    doc = iperf_json(path)
    if "error" in doc:
        return doc
    recv = doc.get("end", {}).get("sum_received") or doc.get("end", {}).get("sum") or {}
    if not recv.get("bytes") or not recv.get("seconds"):
        return {"error": "iperf3 received nothing"}
    sent = recv.get("packets") or 0
    received = recv["bytes"] // length
    return {
        "datagram_bytes": length,
        "gbit_per_s": recv["bytes"] * 8 / recv["seconds"] / 1e9,
        "packets_per_s": round(received / recv["seconds"]),
        "bytes": recv["bytes"],
        "sent_packets": sent,
        "lost_percent": round(recv.get("lost_percent", 0.0), 2),
    }


def rr_result(text):
    """Transactions per second from `sockperf ping-pong`: replies received / valid duration."""
    if text is None:
        return None
    m = re.search(r"RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", text)
    if not m:
        lines = [x for x in text.strip().splitlines() if x.strip()]
        return {"error": (lines[-1] if lines else "no sockperf output")[:200]}
    secs, sent, got = float(m.group(1)), int(m.group(2)), int(m.group(3))
    lat = re.search(r"percentile 50\.000 =\s*([0-9.]+)", text)
    return {
        "transactions_per_s": round(got / secs) if secs else None,
        "seconds": secs,
        "sent": sent,
        "received": got,
        "median_us": float(lat.group(1)) if lat else None,
        "message_bytes": 14,
    }


def cpu_result(path, received_bytes):
    """CPU time of the whole machine during an iperf3 run, per Gbit received.

    The file holds `busy_before total_before busy_after total_after clk_tck`, read from the
    first line of /proc/stat (busy = user + nice + system + irq + softirq).
    """
    text = read(path)
    if not text or not received_bytes:
        return None
    b0, t0, b1, t1, hz = (int(x) for x in text.split())
    cpu_s = (b1 - b0) / hz
    gbit = received_bytes * 8 / 1e9
    nproc = os.cpu_count() or 1
    return {
        "cpu_seconds": round(cpu_s, 3),
        "busy_cores": round((b1 - b0) / (t1 - t0) * nproc, 3) if t1 > t0 else None,
        "cpu_s_per_gbit": round(cpu_s / gbit, 4),
    }


def router_cpu(path, seconds):
    """Cores the weft routers' data plane threads used during an iperf3 run: the sender's (h1)
    and the receiver's (h2). The file holds `h1_before h2_before h1_after h2_after clk_tck`
    (user + system ticks of the `weft-dataplane*` threads, from /proc/PID/task/*/stat).
    """
    text = read(path)
    if not text or not seconds:
        return None
    s0, r0, s1, r1, hz = (int(x) for x in text.split())
    return {
        "sender_cores": round((s1 - s0) / hz / seconds, 3),
        "receiver_cores": round((r1 - r0) / hz / seconds, 3),
    }


def path_check(path, result):
    """Whether the traffic took the row's path: the device (or router) the row is about must
    have sent at least 90 % of the bytes iperf3 delivered during that run.

    The file holds `bytes_before bytes_after description`. A run that fails the check keeps its
    figures under `measured_*` but reports no throughput, with the reason as its error.
    """
    text = read(path)
    if not text or "bytes" not in result:
        return
    before, after, what = text.split(maxsplit=2)
    sent = int(after) - int(before)
    result["path_bytes"] = sent
    if sent < 0.9 * result["bytes"]:
        result["measured_gbit_per_s"] = result.pop("gbit_per_s")
        result["error"] = (f"{what.strip()} sent {sent} bytes of the {result['bytes']} iperf3 "
                           "moved: the traffic took another path")


def cmd_row(a):
    d = a.dir
    row = {"row": a.row, "path": a.label, "status": a.status}
    if a.status == "na":
        row["reason"] = (read(os.path.join(d, "na")) or "not available").strip()
    elif a.status == "failed":
        row["reason"] = (read(os.path.join(d, "error")) or "failed").strip()
    else:
        row["ping"] = ping_stats(read(os.path.join(d, "ping.txt")))
        for n in (1, 4):
            r = iperf_result(os.path.join(d, f"iperf-{n}.json"))
            if "bytes" in r:
                r["cpu"] = cpu_result(os.path.join(d, f"cpu-{n}.txt"), r["bytes"])
                rc = router_cpu(os.path.join(d, f"router-cpu-{n}.txt"), r.get("seconds"))
                if rc:
                    r["router_cpu"] = rc
                path_check(os.path.join(d, f"path-{n}.txt"), r)
            row[f"iperf_{n}"] = r
        mtu = read(os.path.join(d, "path_mtu"))
        if mtu and mtu.strip().isdigit():
            row["path_mtu"] = int(mtu)
        extra = sorted({int(m.group(1)) for m in (re.fullmatch(r"udp-(\d+)\.json", f)
                                                  for f in os.listdir(d)) if m} - {1400, 64})
        # UDP and IP headers: a datagram whose packet exceeds the MTU leaves as fragments.
        headers = 48 if ":" in (read(os.path.join(d, "dst_ip")) or "") else 28
        for length in [1400, 64] + extra:
            r = udp_result(os.path.join(d, f"udp-{length}.json"), length)
            r["cpu"] = cpu_result(os.path.join(d, f"cpu-udp-{length}.txt"), r.get("bytes"))
            if "path_mtu" in row:
                r["fragmented"] = length + headers > row["path_mtu"]
            row[f"udp_{length}"] = r
        na = read(os.path.join(d, "rr.na"))
        row["rr"] = {"na": na.strip()} if na else rr_result(read(os.path.join(d, "rr.txt")))
        na = read(os.path.join(d, "service.na"))
        if na:
            row["service"] = {"na": na.strip()}
        else:
            svc = iperf_result(os.path.join(d, "service.json"))
            err = (read(os.path.join(d, "service.err")) or "").strip()
            if "error" in svc and err:
                svc["error"] += f" ({err[:200]})"
            row["service"] = svc
        mtu = read(os.path.join(d, "pod_mtu"))
        if mtu and mtu.strip().isdigit():
            row["pod_mtu"] = int(mtu)
        errors = [row[k]["error"] for k in ("iperf_1", "iperf_4") if "error" in row[k]]
        if len(errors) == 2:
            row["status"], row["reason"] = "failed", errors[0]
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(f"  -> {summary(row)}", file=sys.stderr)


def gbps(row, n):
    r = row.get(f"iperf_{n}") or {}
    return r.get("gbit_per_s")


def summary(row):
    if row["status"] == "na":
        return f"n/a ({row['reason']})"
    if row["status"] == "failed":
        return f"failed: {row['reason']}"
    parts = []
    for n in (1, 4):
        g = gbps(row, n)
        err = (row.get(f"iperf_{n}") or {}).get("error")
        parts.append(f"{n} stream{'s' if n > 1 else ''} "
                     + (f"{g:.2f} Gbit/s" if g else f"- ({err})" if err else "-"))
    p = row.get("ping") or {}
    if p.get("median_ms") is not None:
        parts.append(f"RTT median {p['median_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms")
    for length in sorted((int(k[4:]) for k in row if k.startswith("udp_")
                          and k[4:].isdigit() and int(k[4:]) != 64), key=lambda n: n != 1400):
        u = udp(row, length, "gbit_per_s")
        if u is not None:
            frag = f", fragmented: MTU {row['path_mtu']}" if udp(row, length, "fragmented") else ""
            name = "UDP" if length == 1400 else f"UDP {length} B"
            parts.append(f"{name} {u:.2f} Gbit/s ({row[f'udp_{length}']['lost_percent']} % lost{frag})")
    k = udp(row, 64, "packets_per_s")
    if k is not None:
        parts.append(f"64 B {k / 1000:.0f} kpps")
    t = rr(row)
    if t is not None:
        parts.append(f"{t} trans/s")
    g = (row.get("service") or {}).get("gbit_per_s")
    if g is not None:
        parts.append(f"Service {g:.2f} Gbit/s")
    return ", ".join(parts)


def fits(row):
    """Whether a 1400-byte datagram left the sender's pod whole: "no (MTU)" when it was cut into
    IP fragments, so the row moved two packets per datagram."""
    frag = udp(row, 1400, "fragmented")
    if frag is None:
        return "-"
    return f"no ({row['path_mtu']})" if frag else "yes"


def udp(row, length, key):
    return (row.get(f"udp_{length}") or {}).get(key)


def rr(row):
    return (row.get("rr") or {}).get("transactions_per_s")


def cpu_per_gbit(row):
    if not gbps(row, 1):
        return None
    return ((row.get("iperf_1") or {}).get("cpu") or {}).get("cpu_s_per_gbit")


# Issue 15's targets, each a comparison with kernel VXLAN (or the other tunnels) in the same run:
# (text, row, measured value, bound, whether the value must be at most the bound).
def targets(rows):
    by = {r["row"]: r for r in rows if r["status"] == "ok"}
    base = by.get(BASELINE)
    out = []
    if base is None:
        return out

    def ratio(row, f, text, bound, at_most):
        r = by.get(row)
        if r is None or f(r) is None or not f(base):
            return
        out.append((text.format(label=r["path"]), f(r) / f(base), bound, at_most, "x"))

    for row, bound in (("weft-sleeve", 1.5), ("weft-encrypted", 2.5)):
        ratio(row, cpu_per_gbit, "{label}: CPU s per Gbit, 1 stream, vs kernel VXLAN", bound, True)
    for row in ("weft-sleeve", "weft-encrypted"):
        frag = udp(by.get(row) or {}, 1400, "fragmented")
        note = f" (fragmented: path MTU {by[row]['path_mtu']})" if frag else ""
        ratio(row, lambda r: udp(r, 1400, "gbit_per_s"),
              "{label}: UDP 1400 B Gbit/s vs kernel VXLAN" + note, 0.5, False)
        ratio(row, lambda r: udp(r, 64, "packets_per_s"),
              "{label}: 64 B packets/s vs kernel VXLAN", 0.7, False)
        ratio(row, rr, "{label}: transactions/s vs kernel VXLAN", 0.7, False)
    enc = by.get("weft-encrypted")
    others = [gbps(by[k], 1) for k in ("tinc", "nebula", "boringtun") if k in by and gbps(by[k], 1)]
    if enc and gbps(enc, 1) and others:
        out.append(("weft sleeve encrypted vs the best of tinc, nebula, boringtun (1 stream)",
                    gbps(enc, 1) / max(others), 10.0, False, "x"))
    # The latency targets also for the opt-in busy-polling row (when it ran): what an install
    # that gives the router a spinning core gets.
    ratio("weft-busy", rr, "{label} (opt-in): transactions/s vs kernel VXLAN", 0.7, False)
    b = (base.get("ping") or {}).get("median_ms")
    for row in ("weft-sleeve", "weft-encrypted", "weft-busy"):
        m = ((by.get(row) or {}).get("ping") or {}).get("median_ms")
        if m is not None and b is not None:
            out.append((f"{by[row]['path']}: RTT median above kernel VXLAN, us",
                        (m - b) * 1000, 50.0, True, ""))
    return out


def fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text and out.returncode == 0 else None


def source_version(repo):
    """The commit the repository is at, "-dirty" if it has local changes (read-only git calls)."""
    git = ["git", "--no-optional-locks", "-c", "safe.directory=*", "-C", repo]
    head = first_line(git + ["rev-parse", "--short=12", "HEAD"])
    if head is None:
        return None
    try:
        changes = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        changes = ""
    return head + ("-dirty" if changes else "")


def cpu_model():
    text = read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.processor() or None


def print_table(header, table):
    """Prints a table of text cells after a blank line (nothing without rows): the first column
    left-aligned, the others right-aligned, each as wide as its widest cell."""
    if not table:
        return
    widths = [max(len(header[i]), *(len(t[i]) for t in table)) for i in range(len(header))]
    print()
    for cells in [header, ["-" * w for w in widths]] + table:
        print("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                        for i, (c, w) in enumerate(zip(cells, widths))).rstrip())


def cmd_final(a):
    rows = [json.loads(line) for line in open(a.results, encoding="utf-8") if line.strip()]
    base = next((gbps(r, 1) for r in rows if r["row"] == BASELINE and r["status"] == "ok"), None)
    for r in rows:
        g = gbps(r, 1)
        r["ratio_vs_vxlan_1_stream"] = round(g / base, 3) if g and base else None

    header = ["path", "1-stream Gbit/s", "4-stream Gbit/s", "vs kernel VXLAN (1 stream)",
              "RTT median ms", "RTT p99 ms", "CPU s per Gbit (1 stream)"]
    table = []
    for r in rows:
        if r["status"] != "ok":
            text = summary(r)
            table.append([r["path"], text if len(text) <= 90 else text[:87] + "..."])
            continue
        p = r.get("ping") or {}
        cpu = (r.get("iperf_1") or {}).get("cpu") or {} if gbps(r, 1) else {}
        table.append([
            r["path"], fmt(gbps(r, 1), 2), fmt(gbps(r, 4), 2),
            fmt(r["ratio_vs_vxlan_1_stream"], 2) if r["ratio_vs_vxlan_1_stream"] else "-",
            fmt(p.get("median_ms"), 3), fmt(p.get("p99_ms"), 3),
            fmt(cpu.get("cpu_s_per_gbit"), 3),
        ])
    widths = [max([len(header[i])] + [len(t[i]) for t in table if i < len(t) and
                                       (i == 0 or len(t) == len(header))])
              for i in range(len(header))]
    def line(cells):
        if len(cells) == 2 and len(header) > 2:  # a row that is not measured: reason spans
            return f"{cells[0]:<{widths[0]}}  {cells[1]}"
        return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    print()
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print(line(t))
    notes = [f"{r['path']}: {summary(r)}" for r in rows
             if r["status"] != "ok" and len(summary(r)) > 90]
    notes += [f"{r['path']}, {n} stream{'s' if n > 1 else ''}: {r[f'iperf_{n}']['error']}"
              for r in rows if r["status"] == "ok" for n in (1, 4)
              if (r.get(f"iperf_{n}") or {}).get("error")]
    if notes:
        print("\n" + "\n".join(f"- {x}" for x in notes))

    header2 = ["path", "UDP 1400 B Gbit/s", "lost %", "fits path MTU", "64 B kpps",
               "trans/s (RR)", "RR median us", "Service Gbit/s"]
    table2 = []
    for r in rows:
        if r["status"] != "ok":
            continue
        k = udp(r, 64, "packets_per_s")
        table2.append([
            r["path"], fmt(udp(r, 1400, "gbit_per_s"), 2), fmt(udp(r, 1400, "lost_percent"), 2),
            fits(r), fmt(k / 1000 if k is not None else None, 0),
            str(rr(r)) if rr(r) is not None else "-",
            fmt((r.get("rr") or {}).get("median_us"), 1),
            fmt((r.get("service") or {}).get("gbit_per_s"), 2),
        ])
    print_table(header2, table2)
    table3 = []
    for r in rows:
        cells = [(r.get(f"iperf_{n}") or {}).get("router_cpu") for n in (1, 4)]
        if r["status"] == "ok" and any(cells):
            table3.append([r["path"]] + [
                f"{c['sender_cores']:.2f} / {c['receiver_cores']:.2f}" if c else "-"
                for c in cells])
    print_table(["path", "data plane cores, 1 stream (h1 / h2)", "4 streams (h1 / h2)"], table3)
    goals = targets(rows)
    if goals:
        print("\ntargets (issue 15), this run:")
        for text, value, bound, at_most, unit in goals:
            met = value <= bound if at_most else value >= bound
            print(f"- {text}: {value:.2f}{unit} ({'at most' if at_most else 'at least'} "
                  f"{bound:g}{unit}): {'met' if met else 'NOT met'}")
    print()

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "iperf_seconds": a.time,
        "ping": {"count": a.ping_count, "interval_s": a.ping_interval},
        "background_busy_cores": a.background,
        "cpu_method": "whole machine, /proc/stat user+nice+system+irq+softirq during the iperf3 "
                      "client run, divided by the Gbit the server received",
        "versions": {
            "iperf3": first_line(["iperf3", "--version"]),
            "weft": first_line([a.weft, "--version"]) if a.weft else None,
            "weft_source": source_version(a.repo) if a.repo else None,
            "tinc": first_line(["tincd", "--version"]),
            "nebula": first_line(["nebula", "-version"]),
            "boringtun": first_line(["boringtun-cli", "--version"]),
            "wg": first_line(["wg", "--version"]),
        },
        "rows": rows,
        "targets": [{"what": t, "value": round(v, 3), "bound": b, "at_most": m,
                     "met": v <= b if m else v >= b} for t, v, b, m, _ in targets(rows)],
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def cmd_bytes(a):
    r = iperf_result(a.file)
    if "bytes" not in r:
        sys.exit(1)
    print(r["bytes"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("row")
    p.add_argument("--row", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--status", required=True, choices=["ok", "na", "failed"])
    p.add_argument("--dir", required=True)
    p.add_argument("--results", required=True)
    p.set_defaults(func=cmd_row)
    p = sub.add_parser("bytes")
    p.add_argument("file")
    p.set_defaults(func=cmd_bytes)
    p = sub.add_parser("final")
    p.add_argument("--results", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--time", type=int)
    p.add_argument("--ping-count", type=int)
    p.add_argument("--ping-interval", type=float)
    p.add_argument("--background", type=float)
    p.add_argument("--weft")
    p.add_argument("--repo")
    p.set_defaults(func=cmd_final)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
