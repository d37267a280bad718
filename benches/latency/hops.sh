#!/usr/bin/env bash
# benches/latency/hops.sh: where a sleeve round trip spends its time, hop by hop.
#
#   sudo bash benches/latency/hops.sh [WEFT_BINARY] [PINGS]
#
# Starts `weft demo --keep` (three host namespaces, pods, real routers; see `weft demo --help`),
# blocks the fast path's UDP port inside h1's namespace so that h1's pairs use the sleeve, captures
# with tcpdump on h1's and h2's TAP ports and underlay interfaces while pod h1-p1 pings pod h2-p1
# (PINGS samples at 10 ms, default 100), and prints the median and 90th percentile of each hop:
#
#   h1 tap->udp   the frame is queued to h1's TAP until its datagram leaves h1 (router h1 wakes,
#                 reads, encapsulates, sends)
#   wire          h1's eth0 to h2's eth0 (veth and bridge, in the kernel)
#   h2 udp->tap   the datagram reaches h2 until the frame is written to h2's TAP (router h2)
#   pod reply     the frame at h2's TAP until the pod's reply is back on it (bridge, veth, pod)
#   h2 tap->udp   router h2 again, for the reply
#   wire, h1 udp->tap   the way back
#
# All timestamps come from one kernel clock. Nothing touches the root network namespace: the nft
# table lives in h1's namespace, which the demo removes with everything else when it stops (on
# exit or Ctrl-C of this script too). Only the demo process this script started is signalled.
set -euo pipefail

WEFT=${1:-target/release/weft}
PINGS=${2:-100}
[[ -x $WEFT ]] || { echo "no weft binary at $WEFT (cargo build --release -p weft)" >&2; exit 1; }
for t in tcpdump nft python3 ip; do
    command -v "$t" >/dev/null || { echo "$t is missing" >&2; exit 1; }
done

OUT=$(mktemp -d /tmp/weft-hops.XXXXXX)
DEMO_PID=""
CAPS=()
cleanup() {
    local p
    for p in "${CAPS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n $DEMO_PID ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -INT "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.5; done
    fi
}
trap cleanup EXIT INT TERM

"$WEFT" demo --keep >"$OUT/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 120); do
    grep -q "stays up" "$OUT/demo.log" && break
    kill -0 "$DEMO_PID" 2>/dev/null || { cat "$OUT/demo.log" >&2; exit 1; }
    sleep 0.5
done
grep -q "stays up" "$OUT/demo.log" || { echo "the demo did not come up (see $OUT/demo.log)" >&2; exit 1; }
P=$(grep -o 'prefix [a-z0-9]*' "$OUT/demo.log" | head -n 1 | cut -d' ' -f2)
STATE=$(grep -o '/tmp/weft-lab-[a-z0-9]*' "$OUT/demo.log" | head -n 1)

# The fast path's probes and traffic use UDP 6784: drop them in h1, so h1's peers fall back to
# the sleeve (UDP 6783).
ip netns exec "$P-h1" nft -f - <<'NFT'
table inet weft_hops {
    chain in { type filter hook input priority 0; udp dport 6784 drop; }
    chain out { type filter hook output priority 0; udp dport 6784 drop; }
}
NFT
for _ in $(seq 60); do
    "$WEFT" status --state-dir "$STATE/state-h1" 2>/dev/null | grep -q ' 0 peer(s)' && break
    sleep 0.5
done
"$WEFT" status --state-dir "$STATE/state-h1" | grep -q ' 0 peer(s)' ||
    { echo "h1's peers did not leave the fast path" >&2; exit 1; }

# Warm up (ARP, MAC learning), then capture.
ip netns exec "$P-h1-p1" ping -n -q -c 50 -i 0.01 10.32.2.1 >/dev/null
for cap in "h1tap $P-h1 weft-tap" "h1eth $P-h1 eth0" "h2eth $P-h2 eth0" "h2tap $P-h2 weft-tap"; do
    read -r name ns dev <<<"$cap"
    ip netns exec "$ns" tcpdump -i "$dev" -n -w "$OUT/$name.pcap" --time-stamp-precision=micro \
        'icmp or (udp port 6783 and greater 140)' >/dev/null 2>&1 &
    CAPS+=($!)
done
sleep 2
ip netns exec "$P-h1-p1" ping -n -q -c "$PINGS" -i 0.01 10.32.2.1 | tail -n 1
sleep 1
for p in "${CAPS[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${CAPS[@]}" 2>/dev/null || true
CAPS=()
for name in h1tap h1eth h2eth h2tap; do
    tcpdump -r "$OUT/$name.pcap" -n -tt 2>/dev/null | awk -v k="$name" '{print $1, k}'
done | sort -n >"$OUT/all.txt"
python3 - "$OUT/all.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
order = ["h1tap", "h1eth", "h2eth", "h2tap", "h2tap", "h2eth", "h1eth", "h1tap"]
hops = ["h1 tap->udp", "wire", "h2 udp->tap", "pod reply", "h2 tap->udp", "wire", "h1 udp->tap"]
spans = [[] for _ in hops]
i = 0
while i + 8 <= len(rows):
    w = rows[i:i + 8]
    if [x[1] for x in w] == order:
        t = [float(x[0]) for x in w]
        for j in range(7):
            spans[j].append((t[j + 1] - t[j]) * 1e6)
        i += 8
    else:
        i += 1
for name, v in zip(hops, spans):
    if v:
        v.sort()
        print(f"{name:12s} n={len(v):4d}  median {statistics.median(v):7.1f} us  p90 {v[int(len(v) * 0.9)]:7.1f} us")
PY
echo "captures in $OUT"
