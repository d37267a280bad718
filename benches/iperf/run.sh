#!/usr/bin/env bash
# benches/iperf/run.sh: compare overlays on this machine in one run.
#
# Every row builds the same small cluster out of network namespaces (two hosts on an underlay
# bridge, one pod per host), brings one overlay up, measures pod to pod ping RTT, iperf3 TCP
# throughput, UDP throughput (1400 and 64-byte datagrams), sockperf request/response and TCP to a
# ClusterIP Service (kube-proxy's iptables rules), and tears everything down again. Nothing touches the root network namespace: every
# link, address, route and sysctl lives in a namespace this script made, whose name starts with
# a per-run prefix, and every process is started inside one of them and stopped by PID.
#
#   sudo bash benches/iperf/run.sh [--time N] [--only ROWS] [--weft PATH] [--json FILE]
#                                  [--no-install] [--keep]
#
# See benches/iperf/README.md for what each row measures and how.

# Rows define hook functions (row_settle, row_path_bytes) that `measure` calls indirectly.
# shellcheck disable=SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# --- rows ----------------------------------------------------------------------------------------

# Row keys in the order they run, and their labels in the table.
ROWS=(underlay vxlan weft-fast weft-sleeve weft-busy weft-sleeve-w2 weft-encrypted weft-encrypted-aes weft-encrypted-chacha weft-encrypted-w2 weft-policy-0 weft-policy-100 weft-policy-1000 tinc nebula boringtun underlay6 vxlan6 weft-fast6 weft-sleeve6 weft-encrypted6)
declare -A LABEL=(
    [underlay]="underlay"
    [vxlan]="kernel VXLAN (hand-built)"
    [weft-fast]="weft fast path"
    [weft-sleeve]="weft sleeve plain"
    [weft-busy]="weft sleeve plain, busy-poll"
    [weft-sleeve-w2]="weft sleeve plain, 2 workers"
    [weft-encrypted-w2]="weft sleeve encrypted (auto), 2 workers"
    [weft-encrypted]="weft sleeve encrypted (--cipher auto)"
    [weft-encrypted-aes]="weft sleeve encrypted, AES-256-GCM"
    [weft-encrypted-chacha]="weft sleeve encrypted, ChaCha20-Poly1305"
    [weft-policy-0]="weft fast path, policy on, 0 policies"
    [weft-policy-100]="weft fast path, 100 policies on the pod"
    [weft-policy-1000]="weft fast path, 1000 policies on the pod"
    [tinc]="tinc (switch mode)"
    [nebula]="nebula"
    [boringtun]="boringtun"
    [underlay6]="IPv6: underlay"
    [vxlan6]="IPv6: kernel VXLAN (hand-built)"
    [weft-fast6]="IPv6: weft fast path"
    [weft-sleeve6]="IPv6: weft sleeve plain"
    [weft-encrypted6]="IPv6: weft sleeve encrypted"
)

# --- options -------------------------------------------------------------------------------------

TIME=5
ONLY=""
WEFT=""
JSON_OUT="$HERE/results.json"
INSTALL=1
KEEP=0
PING_COUNT=200
PING_INTERVAL=0.01

usage() {
    cat <<EOF
Usage: sudo bash benches/iperf/run.sh [OPTIONS]

Compares overlays between two namespace hosts: iperf3 TCP (1 and 4 streams), ping RTT
($PING_COUNT samples at ${PING_INTERVAL} s), CPU seconds per Gbit, UDP (1400 and 64-byte
datagrams), request/response (sockperf) and TCP to a ClusterIP Service, one row per path.

Options:
  --time N       seconds per measured run, six per row (default $TIME)
  --only LIST    comma-separated subset of: ${ROWS[*]}
  --weft PATH    the weft binary (default \$CARGO_TARGET_DIR/release/weft, else target/release/weft)
  --json FILE    where to write the results (default benches/iperf/results.json)
  --no-install   do not run benches/iperf/install.sh first
  --keep         keep the run directory (configs, logs, raw iperf3 and ping output)
  -h, --help     this text
EOF
}

while (($#)); do
    case $1 in
        --time) TIME=${2:?--time needs a value}; shift 2 ;;
        --time=*) TIME=${1#*=}; shift ;;
        --only) ONLY=${2:?--only needs a value}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --weft) WEFT=${2:?--weft needs a value}; shift 2 ;;
        --weft=*) WEFT=${1#*=}; shift ;;
        --json) JSON_OUT=${2:?--json needs a value}; shift 2 ;;
        --json=*) JSON_OUT=${1#*=}; shift ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

[[ $TIME =~ ^[1-9][0-9]*$ ]] || { echo "--time must be a positive integer" >&2; exit 2; }
if [[ -n $ONLY ]]; then
    IFS=, read -ra selected <<<"$ONLY"
    for r in "${selected[@]}"; do
        [[ -n ${LABEL[$r]:-} ]] || { echo "unknown row '$r' (rows: ${ROWS[*]})" >&2; exit 2; }
    done
    ROWS_TO_RUN=()
    for r in "${ROWS[@]}"; do
        [[ ,$ONLY, == *",$r,"* ]] && ROWS_TO_RUN+=("$r")
    done
else
    ROWS_TO_RUN=("${ROWS[@]}")
fi
if [[ -z $WEFT ]]; then
    if [[ -n ${CARGO_TARGET_DIR:-} && -x $CARGO_TARGET_DIR/release/weft ]]; then
        WEFT=$CARGO_TARGET_DIR/release/weft
    else
        WEFT=$REPO/target/release/weft
    fi
fi
[[ $JSON_OUT == /* ]] || JSON_OUT=$PWD/$JSON_OUT

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh must run as root (it creates network namespaces)" >&2
    exit 1
fi
PYTHON=$(command -v python3 || echo /usr/bin/python3)
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:/usr/sbin:/sbin:$CARGO_BIN"

if ((INSTALL)); then
    bash "$HERE/install.sh" || echo "install.sh reported a problem; rows that miss a tool print n/a" >&2
fi
command -v iperf3 >/dev/null || { echo "iperf3 is missing (run benches/iperf/install.sh)" >&2; exit 1; }

# --- the run, and cleaning it up whatever happens -----------------------------------------------

PREFIX="wi$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"   # e.g. wi3fa9c1
RUN_DIR=/tmp/weft-iperf-$PREFIX
mkdir -p "$RUN_DIR"
RESULTS="$RUN_DIR/results.jsonl"
: >"$RESULTS"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# Namespaces of this run all start with "$PREFIX-". The rows tear their own down; this is the
# safety net for an interrupted run: it kills what still runs in them (processes this script
# started, in namespaces it made) and deletes them.
sweep() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" | sort -r); do
        kill_ns_pids "$ns"
        ip netns del "$ns" 2>/dev/null
    done
    rm -f /var/run/wireguard/bt"${PREFIX#wi}"?.sock
}

kill_ns_pids() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null
    done
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    sweep
    if ((KEEP)) || grep -q -e '"status": "failed"' -e '"error"' "$RESULTS" 2>/dev/null; then
        log "kept $RUN_DIR (logs, configs, raw output of every row)"
    else
        rm -rf "$RUN_DIR"
    fi
    exit "$rc"
}
# On SIGINT or SIGTERM: stop the row running now (its processes first, so that its current
# command returns at once), let its teardown run, then clean up and exit.
ROW_SUBSHELL=""
on_signal() {
    trap '' INT TERM
    log "interrupted, cleaning up"
    if [[ -n $ROW_SUBSHELL ]]; then
        kill -TERM "$ROW_SUBSHELL" 2>/dev/null
        sweep
        wait "$ROW_SUBSHELL" 2>/dev/null
    fi
    exit 130
}
trap on_exit EXIT
trap on_signal INT TERM

# --- helpers used inside a row ------------------------------------------------------------------
# A row runs in a subshell with these variables:
#   ROW       the row key           ROW_DIR   its directory (logs, configs, raw results)
#   NSP       its namespace prefix  "$PREFIX-<row>"
#   UL H1 H2  the underlay and host namespaces, made by lab_up
#   ROW_PIDS  processes it started  ROW_NS    namespaces it made (torn down on exit)
# and must set, before `measure`:
#   SRC_NS (the iperf3 client), DST_NS (the server), DST_IP (the server's address).

ROW_PIDS=()
ROW_NS=()

# Stops the row's processes (SIGTERM, then SIGKILL after 2 s), then deletes its namespaces.
row_teardown() {
    exec 2>/dev/null # no "Killed" job notices: stopping them is the point
    local pid i
    for pid in "${ROW_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 20; i++)); do
        local alive=0
        for pid in "${ROW_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${ROW_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    for ((i = ${#ROW_NS[@]} - 1; i >= 0; i--)); do
        kill_ns_pids "${ROW_NS[i]}"
        ip netns del "${ROW_NS[i]}" 2>/dev/null
    done
}

# The row cannot run here: prints the reason in the table and stops the row.
na() {
    printf '%s\n' "$*" >"$ROW_DIR/na"
    exit 3
}

# The row failed: the reason goes into the table.
fail() {
    printf '%s\n' "$*" >"$ROW_DIR/error"
    log "$ROW: $*"
    exit 1
}

# Runs a command, failing the row with its output if it fails.
run() {
    local out
    if ! out=$("$@" 2>&1); then
        fail "\`$*\` failed: ${out//$'\n'/ }"
    fi
    [[ -z $out ]] || printf '%s\n' "$out" >>"$ROW_DIR/commands.log"
}

mkns() {
    run ip netns add "$1"
    ROW_NS+=("$1")
    run ip -n "$1" link set lo up
}

# Starts a long-running program inside a namespace, output to <ROW_DIR>/<name>.log; its PID is
# remembered for the teardown. `ip netns exec` execs the program, so $! is the program's PID.
spawn() {
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" "$@" </dev/null >>"$ROW_DIR/$name.log" 2>&1 &
    ROW_PIDS+=("$!")
    echo "$!" >"$ROW_DIR/$name.pid"
}

# CPU ticks (user + system) of the weft routers' data plane threads (`weft-dataplane*`) on h1 and
# h2, "h1 h2"; empty on rows without weft routers.
router_ticks() {
    local i pid sum out=()
    for i in 1 2; do
        [[ -f $ROW_DIR/weft-h$i.pid ]] || return 0
        pid=$(<"$ROW_DIR/weft-h$i.pid")
        sum=$(cat /proc/"$pid"/task/*/stat 2>/dev/null |
            awk '$2 ~ /^\(weft-dataplane/ { t += $14 + $15 } END { print t + 0 }')
        out+=("$sum")
    done
    echo "${out[*]}"
}

# Waits up to $2 seconds for the command after it to succeed.
wait_for() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# The underlay: namespace UL with bridge "ul", hosts H1 and H2 with eth0 at 10.200.0.11 and .12
# (/24, MTU 1500), each a veth whose peer is a port of "ul". As in router/src/lab.rs.
# The rows whose key ends in 6 (V6=1) use an IPv6-only underlay instead: fd00:200::11 and ::12
# (/64, no duplicate address detection), and their pods talk over IPv6 (fd10:32::<i>:1/64).
UNDERLAY_MTU=1500
V6=0
host_ip() { if ((V6)); then echo "fd00:200::1$1"; else echo "10.200.0.1$1"; fi; }
host_cidr() { if ((V6)); then echo "$(host_ip "$1")/64 nodad"; else echo "$(host_ip "$1")/24"; fi; }
lab_up() {
    UL=$NSP-ul H1=$NSP-h1 H2=$NSP-h2
    mkns "$UL"
    run ip -n "$UL" link add ul type bridge mcast_snooping 0
    run ip -n "$UL" link set ul up
    local i h
    for i in 1 2; do
        h=$NSP-h$i
        mkns "$h"
        run ip -n "$h" link add eth0 mtu "$UNDERLAY_MTU" type veth peer name "h$i" mtu "$UNDERLAY_MTU" netns "$UL"
        # shellcheck disable=SC2046 # "ADDR/LEN" or "ADDR/LEN nodad"
        run ip -n "$h" addr add $(host_cidr "$i") dev eth0
        run ip -n "$h" link set eth0 up
        run ip -n "$UL" link set "h$i" master ul up
    done
}

# pod_add HOST_INDEX ADDR/LEN MTU [BRIDGE]: namespace <NSP>-h<i>-p1 with eth0 at ADDR/LEN, its
# veth peer "vp1" in the host, attached to BRIDGE if given (L2 overlays) or left unbridged for
# routed pods (L3 overlays, see pod_route). Both ends get MTU.
pod_add() {
    local i=$1 cidr=$2 mtu=$3 bridge=${4:-}
    local h=$NSP-h$i p=$NSP-h$i-p1
    mkns "$p"
    run ip -n "$p" link add eth0 mtu "$mtu" type veth peer name vp1 mtu "$mtu" netns "$h"
    run ip -n "$p" addr add "$cidr" dev eth0
    if ((V6)); then
        local last=${cidr%/*}
        run ip -n "$p" addr add "fd10:32::$i:${last##*.}/64" dev eth0 nodad
    fi
    run ip -n "$p" link set eth0 up
    if [[ -n $bridge ]]; then
        run ip -n "$h" link set vp1 master "$bridge"
    fi
    run ip -n "$h" link set vp1 up
}

# For L3 overlays: pod i at 10.32.i.2/24 behind its host, whose end of the veth is the pod's
# gateway 10.32.i.1; the host forwards (a sysctl of the host namespace only).
pod_route() {
    local i=$1 mtu=$2
    local h=$NSP-h$i p=$NSP-h$i-p1
    pod_add "$i" "10.32.$i.2/24" "$mtu"
    run ip -n "$h" addr add "10.32.$i.1/24" dev vp1
    run ip -n "$p" route add default via "10.32.$i.1"
    run ip netns exec "$h" sysctl -qw net.ipv4.ip_forward=1
}

# CPU time of the whole machine, from the first line of /proc/stat (USER_HZ ticks):
# prints "busy total", busy = user + nice + system + irq + softirq.
cpu_ticks() {
    local _ user nice system idle iowait irq softirq steal
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    echo "$((user + nice + system + irq + softirq)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# The measurement, the same for every row: SRC_NS pings DST_IP, then iperf3 with 1 and with 4
# streams for TIME seconds each, the machine's CPU ticks read before and after each iperf3 run.
measure() {
    : "${SRC_NS:?} ${DST_NS:?} ${DST_IP:?}"
    log "$ROW: waiting for $DST_IP to answer"
    wait_for 30 ip netns exec "$SRC_NS" ping -n -q -c 1 -W 1 "$DST_IP" ||
        fail "no ping answer from $DST_IP within 30 s"
    # Warm-up: ARP, tunnel handshakes, path MTU discovery; then let the row settle.
    ip netns exec "$SRC_NS" ping -n -q -c 20 -i 0.05 -W 1 "$DST_IP" >/dev/null 2>&1
    if declare -F row_settle >/dev/null; then row_settle; fi

    log "$ROW: ping, $PING_COUNT samples at $PING_INTERVAL s"
    ip netns exec "$SRC_NS" ping -n -c "$PING_COUNT" -i "$PING_INTERVAL" -W 1 "$DST_IP" \
        >"$ROW_DIR/ping.txt" 2>&1

    spawn "$DST_NS" iperf3-server iperf3 --server --bind "$DST_IP"
    wait_for 10 iperf3_listening || fail "iperf3 server did not start"
    sleep 0.5
    local streams before after path_before routers_before
    for streams in 1 4; do
        log "$ROW: iperf3, $streams stream(s), $TIME s"
        path_before=$(path_bytes)
        routers_before=$(router_ticks)
        before=$(cpu_ticks)
        # shellcheck disable=SC2086 # IPERF_ARGS: extra iperf3 client arguments, split on spaces
        ip netns exec "$SRC_NS" timeout $((TIME + 30)) \
            iperf3 --client "$DST_IP" --time "$TIME" --parallel "$streams" --json \
            --connect-timeout 5000 ${IPERF_ARGS:-} >"$ROW_DIR/iperf-$streams.json" 2>"$ROW_DIR/iperf-$streams.err"
        after=$(cpu_ticks)
        echo "$before $after $(getconf CLK_TCK)" >"$ROW_DIR/cpu-$streams.txt"
        if [[ -n $routers_before ]]; then
            echo "$routers_before $(router_ticks) $(getconf CLK_TCK)" >"$ROW_DIR/router-cpu-$streams.txt"
        fi
        if [[ -n $path_before ]]; then
            printf '%s %s %s\n' "$path_before" "$(path_bytes)" "$PATH_WHAT" >"$ROW_DIR/path-$streams.txt"
        fi
        sleep 1
    done
    measure_udp
    measure_rr
    measure_service
    if declare -F row_finish >/dev/null; then row_finish; fi
}

# UDP through the row's path, one iperf3 flow each, TIME seconds, sent as fast as the sender can
# (-b 0): 1400-byte datagrams (throughput and loss) and 64-byte datagrams (packets per second
# received). The server's view (what arrived) is in the client's JSON (end.sum: iperf3 fetches
# the server's counters at the end). CPU ticks are kept as for TCP.
# UDP_LENGTHS in the environment replaces the datagram sizes (e.g. "1400 1380 64"); the tables
# show 1400 and 64, the JSON and the summary line every size. The MTU the sender's kernel uses
# toward DST_IP is kept (path_mtu): a datagram above it leaves the pod as IP fragments.
measure_udp() {
    local len before after route dev mtu
    route=$(ip netns exec "$SRC_NS" ip route get "$DST_IP" 2>/dev/null)
    dev=$(grep -oE 'dev [^ ]+' <<<"$route" | head -n 1)
    mtu=$(grep -oE ' mtu [0-9]+' <<<"$route" | head -n 1)
    if [[ -z $mtu && -n $dev ]]; then
        mtu=$(ip netns exec "$SRC_NS" cat "/sys/class/net/${dev#dev }/mtu" 2>/dev/null)
    fi
    [[ -n ${mtu// /} ]] && echo "${mtu# mtu }" >"$ROW_DIR/path_mtu"
    echo "$DST_IP" >"$ROW_DIR/dst_ip"
    for len in ${UDP_LENGTHS:-1400 64}; do
        log "$ROW: iperf3 UDP, $len-byte datagrams, $TIME s"
        before=$(cpu_ticks)
        ip netns exec "$SRC_NS" timeout $((TIME + 30)) \
            iperf3 --client "$DST_IP" --udp --bitrate 0 --length "$len" --time "$TIME" --json \
            --connect-timeout 5000 >"$ROW_DIR/udp-$len.json" 2>"$ROW_DIR/udp-$len.err"
        after=$(cpu_ticks)
        echo "$before $after $(getconf CLK_TCK)" >"$ROW_DIR/cpu-udp-$len.txt"
        sleep 1
    done
}

# Request/response: one TCP connection, sockperf ping-pong with its smallest message (14 bytes:
# sockperf's header), one request outstanding at a time, for TIME seconds. Transactions per
# second = replies received / duration. Needs sockperf (benches/iperf/install.sh).
RR_PORT=11111
measure_rr() {
    if [[ $DST_IP == *:* ]]; then
        echo "sockperf 3.7 (Debian) takes no IPv6 address" >"$ROW_DIR/rr.na"
        return
    fi
    if ! command -v sockperf >/dev/null; then
        echo "sockperf is not installed (benches/iperf/install.sh)" >"$ROW_DIR/rr.txt"
        return
    fi
    log "$ROW: sockperf TCP ping-pong, 14-byte messages, $TIME s"
    spawn "$DST_NS" sockperf-server sockperf server --tcp -i "$DST_IP" -p "$RR_PORT"
    wait_for 10 rr_listening || { echo "sockperf server did not start" >"$ROW_DIR/rr.txt"; return; }
    ip netns exec "$SRC_NS" timeout $((TIME + 30)) sockperf ping-pong --tcp -i "$DST_IP" \
        -p "$RR_PORT" -m 14 -t "$TIME" >"$ROW_DIR/rr.txt" 2>&1
}
rr_listening() { ip netns exec "$DST_NS" ss -Hltn "sport = :$RR_PORT" | grep -q "$RR_PORT"; }

# Pod to a Service: the source host gets the ClusterIP rules kube-proxy (iptables mode) writes
# for one Service with one endpoint (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT, in
# PREROUTING for pods and OUTPUT for the host; ip6tables for the IPv6 rows), the source reaches
# the Service CIDR through its host, and iperf3 (1 TCP stream, TIME seconds) connects to the
# ClusterIP. On bridged rows the host gets an address on the pod's bridge as the gateway, and
# bridge netfilter on (in that host namespace), as on a Kubernetes node, so that the endpoint's
# replies, bridged straight back to the pod, are un-NATed by conntrack.
measure_service() {
    local out svc=10.96.0.10
    [[ $DST_IP == *:* ]] && svc=fd00:10:96::a
    if ! out=$(service_up "$svc" 2>&1); then
        echo "could not set the Service up: ${out//$'\n'/ }" >"$ROW_DIR/service.err"
        return
    fi
    log "$ROW: iperf3 to the Service $svc port 5201, 1 stream, $TIME s"
    ip netns exec "$SRC_NS" timeout $((TIME + 30)) \
        iperf3 --client "$svc" --time "$TIME" --json --connect-timeout 5000 \
        >"$ROW_DIR/service.json" 2>"$ROW_DIR/service.err"
}

# service_up SERVICE_IP: the route to the Service CIDR and kube-proxy's rules (see above).
service_up() {
    set -e
    local svc=$1 dev gw v=4 cidr=10.96.0.0/12 tables=iptables-restore br_sysctl=iptables
    local host_len=32 ep="$DST_IP:5201" lan=10.32.1.254/16
    if [[ $svc == *:* ]]; then
        v=6 cidr=fd00:10:96::/112 tables=ip6tables-restore br_sysctl=ip6tables host_len=128
        ep="[$DST_IP]:5201" lan=fd10:32::1:fe/64
    fi
    if [[ $SRC_NS == "$H1" ]]; then
        # The underlay row: the host itself is the client (kube-proxy's OUTPUT rule).
        ip -n "$H1" -$v route add "$cidr" dev eth0
    else
        # The pod's gateway if it has one (routed rows, pods attached by weft-cni), else a new
        # address on the bridge the pod's veth is attached to.
        gw=$(ip -n "$SRC_NS" -$v -j route show default | "$PYTHON" -c \
            'import json,sys; r=json.load(sys.stdin); print(r[0].get("gateway", "") if r else "")')
        if [[ -z $gw ]]; then
            dev=$(ip -n "$H1" -j link show dev vp1 | "$PYTHON" -c \
                'import json,sys; print(json.load(sys.stdin)[0]["master"])')
            gw=${lan%/*}
            ip -n "$H1" addr add "$lan" dev "$dev" nodad 2>/dev/null ||
                ip -n "$H1" addr add "$lan" dev "$dev"
        fi
        dev=$(ip -n "$H1" -$v -j addr show to "$gw/$host_len" | "$PYTHON" -c \
            'import json,sys; print(json.load(sys.stdin)[0]["ifname"])')
        if ip -n "$H1" -d link show dev "$dev" | grep -q "bridge "; then
            ip netns exec "$H1" sysctl -qw "net.bridge.bridge-nf-call-$br_sysctl=1"
        fi
        if ((v == 4)); then
            ip netns exec "$H1" sysctl -qw "net.ipv4.conf.$dev.send_redirects=0"
            ip netns exec "$H1" sysctl -qw net.ipv4.conf.all.send_redirects=0
            ip netns exec "$H1" sysctl -qw net.ipv4.ip_forward=1
        else
            ip netns exec "$H1" sysctl -qw net.ipv6.conf.all.forwarding=1
        fi
        ip -n "$SRC_NS" -$v route add "$cidr" via "$gw"
    fi
    ip netns exec "$H1" "$tables" --noflush <<EOF2
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-BENCHIPERF3TCP - [0:0]
:KUBE-SEP-BENCHIPERF3EP1 - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -d $svc/$host_len -p tcp -m comment --comment "bench/iperf3 cluster IP" -m tcp --dport 5201 -j KUBE-SVC-BENCHIPERF3TCP
-A KUBE-SVC-BENCHIPERF3TCP -m comment --comment "bench/iperf3 -> $ep" -j KUBE-SEP-BENCHIPERF3EP1
-A KUBE-SEP-BENCHIPERF3EP1 -s $DST_IP/$host_len -m comment --comment "bench/iperf3" -j KUBE-MARK-MASQ
-A KUBE-SEP-BENCHIPERF3EP1 -p tcp -m comment --comment "bench/iperf3" -m tcp -j DNAT --to-destination $ep
COMMIT
EOF2
}

# Bytes sent so far on the path the row measures (as row_path_bytes prints them), or nothing if
# the row defines no such counter.
path_bytes() {
    if declare -F row_path_bytes >/dev/null; then
        row_path_bytes || echo 0
    fi
}

iperf3_listening() { ip netns exec "$DST_NS" ss -Hltn "sport = :5201" | grep -q 5201; }

# Appends the row's result (from the files in its directory) to the results and prints a line.
record() {
    local row=$1 status=$2
    "$PYTHON" "$HERE/report.py" row --row "$row" --label "${LABEL[$row]}" --status "$status" \
        --dir "$RUN_DIR/$row" --results "$RESULTS"
}

# --- the rows ------------------------------------------------------------------------------------
# Each row_<key> builds its overlay on top of lab_up and sets SRC_NS, DST_NS, DST_IP; it may define
# row_settle (called after the warm-up pings), row_finish (called after the measurement, e.g. to
# save a status report into ROW_DIR) and row_path_bytes, with PATH_WHAT naming it: the bytes sent
# so far by the device (or router) the row is about, read before and after each iperf3 run so
# that the report can check that the traffic really took that path.

# 1. The underlay itself: host to host, no overlay.
row_underlay() {
    lab_up
    SRC_NS=$H1 DST_NS=$H2 DST_IP=$(host_ip 2)
}

# 2. A plain kernel VXLAN device per host, bridged with the pod's veth; the only FDB entry is the
#    all-zeros flood entry to the other host (no learning from the network).
VXLAN_MTU=1450
row_vxlan() {
    ((V6)) && VXLAN_MTU=1430 # 20 bytes more of outer header
    lab_up
    local i o h
    for i in 1 2; do
        o=$((3 - i)) h=$NSP-h$i
        run ip -n "$h" link add vx0 type vxlan id 42 dstport 4789 local "$(host_ip "$i")" nolearning
        run ip -n "$h" link set vx0 mtu "$VXLAN_MTU"
        run bridge -n "$h" fdb append 00:00:00:00:00:00 dev vx0 dst "$(host_ip "$o")"
        run ip -n "$h" link add br0 mtu "$VXLAN_MTU" type bridge
        run ip -n "$h" link set vx0 master br0 up
        run ip -n "$h" link set br0 up
        pod_add "$i" "10.32.$i.1/16" "$VXLAN_MTU" br0
    done
    SRC_NS=$NSP-h1-p1 DST_NS=$NSP-h2-p1 DST_IP=10.32.2.1
    PATH_WHAT="h1's VXLAN device vx0"
    row_path_bytes() { link_tx_bytes "$H1" vx0; }
}

# Bytes interface $2 in namespace $1 has sent.
link_tx_bytes() {
    ip -n "$1" -s -j link show dev "$2" |
        "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["bytes"])'
}

# --- weft ---

weft_help() { "$WEFT" router --help 2>/dev/null; }
need_weft() {
    [[ -x $WEFT ]] || na "weft binary not found at $WEFT (cargo build --release -p weft, or --weft PATH)"
}

# The router flags for the fast path, from `weft router --help`: a flag like `--fast-path` turns
# it on, or it is on by default and a flag like `--no-fastpath` turns it off. The sleeve rows pass
# the "off" flag (and check afterwards that the sleeve carried the traffic).
weft_flag() { weft_help | grep -oE -- "$1" | head -n 1; }
weft_fast_path_on_args() {
    local on
    on=$(weft_flag '--fast-?path\b') # "--no-fastpath" does not match: one dash before "fast"
    if [[ -n $on ]]; then
        echo "$on"
    elif [[ -n $(weft_flag '--no-fast-?path') ]]; then
        echo "" # on by default
    else
        return 1
    fi
}
weft_fast_path_off_args() { weft_flag '--no-fast-?path'; }

weft_status() { "$WEFT" status --json --state-dir "$ROW_DIR/weft-h$1"; }

# Prints a value from `weft status --json` of host $1: $2 is a Python expression over `r`.
weft_query() {
    weft_status "$1" | "$PYTHON" -c "import json,sys; r=json.load(sys.stdin); print($2)"
}

# Starts `weft router` on both hosts (extra router arguments in "$@", then the words of the
# environment variable WEFT_ARGS, for A/B runs of a flag), waits until each sees the
# other as established, and attaches a pod to each bridge "weft" at the pod MTU the router reports.
weft_up() {
    lab_up
    local i o
    for i in 1 2; do
        o=$((3 - i))
        mkdir -p "$ROW_DIR/weft-h$i"
        # shellcheck disable=SC2086 # WEFT_ARGS: extra router arguments, split on spaces
        spawn "$NSP-h$i" "weft-h$i" "$WEFT" router --name "h$i" --listen "$(host_ip "$i")" \
            --peer "$(host_ip "$o")" --state-dir "$ROW_DIR/weft-h$i" "$@" ${WEFT_ARGS:-}
    done
    for i in 1 2; do
        wait_for 20 weft_status "$i" || fail "weft router on h$i did not answer (see weft-h$i.log)"
    done
    for i in 1 2; do
        wait_for 30 weft_query "$i" \
            "exit(0 if any(p['state'] == 'established' for p in r['peers']) else 1)" ||
            fail "h$i never saw its peer established: $(weft_query "$i" "[p['state'] for p in r['peers']]")"
    done
    WEFT_POD_MTU=$(weft_query 1 "r['pod_mtu']")
    echo "$WEFT_POD_MTU" >"$ROW_DIR/pod_mtu"
    for i in 1 2; do
        pod_add "$i" "10.32.$i.1/16" "$WEFT_POD_MTU" weft
    done
    SRC_NS=$NSP-h1-p1 DST_NS=$NSP-h2-p1 DST_IP=10.32.2.1
    # Keep what the routers say after the measurement (in the run directory, see --keep).
    row_finish() {
        local i
        for i in 1 2; do
            weft_status "$i" >"$ROW_DIR/weft-h$i-status.json" 2>&1
            # Where packets were lost, if any: link drops (the TAP's queue) and UDP buffer errors.
            { ip netns exec "$NSP-h$i" ip -s link; ip netns exec "$NSP-h$i" nstat -az; } \
                >"$ROW_DIR/h$i-links.txt" 2>&1
        done
    }
}

# Bytes h1's router has sent to its peers through the sleeve.
weft_sleeve_bytes() { weft_query 1 "sum(p['tx_bytes'] for p in r['peers'])"; }

# 3. weft with the kernel VXLAN fast path.
row_weft_fast() {
    need_weft
    local args
    args=$(weft_fast_path_on_args) || na "not implemented: weft router --help shows no fast-path option"
    # shellcheck disable=SC2086 # args is zero or one word
    weft_up $args
    # The routers move a peer to the fast path once their probes succeed: wait for it when the
    # status reports it (`fastpath.peers`), else give them a few seconds.
    row_settle() {
        local i
        if weft_query 1 "r['fastpath']['peers']" >/dev/null 2>&1; then
            for i in 1 2; do
                wait_for 30 weft_query "$i" "exit(0 if r['fastpath']['peers'] >= 1 else 1)" ||
                    fail "h$i never put its peer on the fast path: $(weft_query "$i" "r['fastpath']")"
            done
        else
            sleep 5
        fi
    }
    WEFT_VXLAN=$(weft_query 1 "r['fastpath']['device']" 2>/dev/null) || WEFT_VXLAN=weft-vxlan
    PATH_WHAT="h1's fast path device $WEFT_VXLAN"
    row_path_bytes() { link_tx_bytes "$H1" "$WEFT_VXLAN"; }
}

# 4. weft's sleeve (userspace router, UDP), in clear.
row_weft_sleeve() {
    need_weft
    # shellcheck disable=SC2046 # zero or one word
    weft_up $(weft_fast_path_off_args)
    PATH_WHAT="h1's sleeve (weft status: bytes sent to peers)"
    row_path_bytes() { weft_sleeve_bytes; }
}

# 4b. the same with the data plane thread polling 300 us after its last packet before it sleeps
# (`--busy-poll-us`, off by default): what a latency-sensitive install can buy with CPU.
BUSY_POLL_US=${BUSY_POLL_US:-300}
row_weft_busy() {
    need_weft
    weft_help | grep -q -- '--busy-poll-us' || na "not implemented: weft router --help shows no --busy-poll-us"
    # shellcheck disable=SC2046 # zero or one word
    weft_up --busy-poll-us "$BUSY_POLL_US" $(weft_fast_path_off_args)
    PATH_WHAT="h1's sleeve (weft status: bytes sent to peers)"
    row_path_bytes() { weft_sleeve_bytes; }
}

# 4c. the plain sleeve with two data plane workers (`--workers 2`): one TAP queue and one UDP
# socket each; the other rows run `--workers auto` (1 on a 2-core machine).
row_weft_sleeve_w2() {
    need_weft
    weft_help | grep -q -- '--workers' || na "not implemented: weft router --help shows no --workers"
    # shellcheck disable=SC2046 # zero or one word
    weft_up --workers 2 $(weft_fast_path_off_args)
    PATH_WHAT="h1's sleeve (weft status: bytes sent to peers)"
    row_path_bytes() { weft_sleeve_bytes; }
}

# 6. weft's fast path with NetworkPolicy on (--policy-dir, pods attached through cnitool with
# their identity, bridge netfilter on in the hosts): with 0 policies, then 100 or 1000 policies
# that all select the server pod, every one but the last allowing someone else, so that a new
# connection walks them all (established packets are accepted by conntrack first). Needs
# cnitool (scripts/setup.sh) and weft-cni beside the weft binary.
weft_policy_row() {
    local n=$1 i o
    POLICY_N=$n
    need_weft
    weft_help | grep -q -- '--policy-dir' || na "not implemented: weft router --help shows no --policy-dir"
    local cnitool plugin
    cnitool=$(command -v cnitool || echo /usr/local/bin/cnitool)
    plugin=$(cd "$(dirname "$WEFT")" && pwd)/weft-cni
    [[ -x $cnitool ]] || na "cnitool not found (scripts/setup.sh installs it)"
    [[ -x $plugin ]] || na "weft-cni not found beside $WEFT"
    lab_up
    mkdir -p "$ROW_DIR/cni-bin" "$ROW_DIR/policy"
    ln -sf "$plugin" "$ROW_DIR/cni-bin/weft-cni"
    "$PYTHON" - "$ROW_DIR/policy" "$n" <<'PY'
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
docs = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "bench", "labels": {"role": "client"}}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server", "namespace": "bench", "labels": {"role": "server"}}},
]
for k in range(n):
    peer = {"role": "client"} if k == n - 1 else {"role": "other-%d" % k}
    docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "p%04d" % k, "namespace": "bench"},
                 "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                          "ingress": [{"from": [{"podSelector": {"matchLabels": peer}}]}]}})
with open(os.path.join(d, ".objects.json.tmp"), "w") as f:
    json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, f)
os.rename(os.path.join(d, ".objects.json.tmp"), os.path.join(d, "objects.json"))
PY
    for i in 1 2; do
        o=$((3 - i))
        mkdir -p "$ROW_DIR/weft-h$i" "$ROW_DIR/cni-h$i"
        printf '{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni","stateDir":"%s"}]}\n' \
            "$ROW_DIR/weft-h$i" >"$ROW_DIR/cni-h$i/10-weft.conflist"
        spawn "$NSP-h$i" "weft-h$i" "$WEFT" router --name "h$i" --listen "$(host_ip "$i")" \
            --peer "$(host_ip "$o")" --state-dir "$ROW_DIR/weft-h$i" --pod-cidr 10.32.0.0/12 \
            --ipam-init-peers 2 --policy-dir "$ROW_DIR/policy"
    done
    for i in 1 2; do
        wait_for 20 weft_status "$i" || fail "weft router on h$i did not answer (see weft-h$i.log)"
        wait_for 30 weft_query "$i" "exit(0 if r['ipam'] and r['ipam'].get('ready') else 1)" ||
            fail "h$i: pod IPAM not ready"
    done
    local name
    for i in 1 2; do
        name=$([[ $i == 1 ]] && echo client || echo server)
        mkns "$NSP-h$i-p1"
        ip netns exec "$NSP-h$i" env CNI_PATH="$ROW_DIR/cni-bin" NETCONFPATH="$ROW_DIR/cni-h$i" \
            CNI_ARGS="K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$name" \
            "$cnitool" add weft "/run/netns/$NSP-h$i-p1" >"$ROW_DIR/cni-h$i.json" 2>&1 ||
            fail "cnitool add on h$i: $(cat "$ROW_DIR/cni-h$i.json")"
    done
    DST_IP=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$ROW_DIR/cni-h2.json")
    SRC_NS=$NSP-h1-p1 DST_NS=$NSP-h2-p1
    row_settle() {
        local i
        for i in 1 2; do
            wait_for 30 weft_query "$i" "exit(0 if r['fastpath']['peers'] >= 1 else 1)" ||
                fail "h$i never put its peer on the fast path"
            wait_for 30 weft_query "$i" "exit(0 if r['policy']['policies'] == $POLICY_N and r['policy']['applied'] >= 1 else 1)" ||
                fail "h$i: the $POLICY_N policies are not in force: $(weft_query "$i" "r['policy']")"
        done
    }
    row_finish() {
        local i
        for i in 1 2; do
            weft_status "$i" >"$ROW_DIR/weft-h$i-status.json" 2>&1
            ip netns exec "$NSP-h$i" nft list table inet weft_policy >"$ROW_DIR/h$i-policy.nft" 2>&1
        done
    }
    WEFT_VXLAN=weft-vxlan
    PATH_WHAT="h1's fast path device $WEFT_VXLAN"
    row_path_bytes() { link_tx_bytes "$H1" "$WEFT_VXLAN"; }
}
row_weft_policy_0() { weft_policy_row 0; }
row_weft_policy_100() { weft_policy_row 100; }
row_weft_policy_1000() { weft_policy_row 1000; }

# 5. weft's sleeve with a cluster secret (encrypted): --cipher auto (AES-256-GCM where both hosts
# have AES instructions, ChaCha20-Poly1305 otherwise), or each AEAD pinned.
weft_encrypted_row() {
    local cipher=$1 enc want
    need_weft
    weft_help | grep -q -- '--secret-file' || na "not implemented: weft router --help shows no --secret-file"
    if [[ $cipher != auto ]]; then
        weft_help | grep -q -- '--cipher' || na "not implemented: weft router --help shows no --cipher"
    fi
    head -c 32 /dev/urandom | base64 >"$ROW_DIR/secret"
    chmod 600 "$ROW_DIR/secret"
    local pin=()
    [[ $cipher == auto ]] || pin=(--cipher "$cipher")
    # shellcheck disable=SC2046 # zero or one word
    weft_up --secret-file "$ROW_DIR/secret" "${pin[@]}" $(weft_fast_path_off_args)
    enc=$(weft_query 1 "','.join(p['encryption'] for p in r['peers'])")
    case $cipher in
        auto) [[ $enc == chacha20-poly1305 || $enc == aes-256-gcm ]] ||
            fail "the peer's data is not encrypted (encryption: $enc)" ;;
        *) [[ $enc == "$cipher" ]] || fail "the peer's data is not sealed with $cipher (encryption: $enc)" ;;
    esac
    log "encryption: $enc"
    PATH_WHAT="h1's sleeve (weft status: bytes sent to peers)"
    row_path_bytes() { weft_sleeve_bytes; }
}
row_weft_encrypted() { weft_encrypted_row auto; }
row_weft_encrypted_w2() {
    need_weft
    weft_help | grep -q -- '--workers' || na "not implemented: weft router --help shows no --workers"
    WEFT_ARGS="${WEFT_ARGS:-} --workers 2" weft_encrypted_row auto
}
row_weft_encrypted_aes() { weft_encrypted_row aes-256-gcm; }
row_weft_encrypted_chacha() { weft_encrypted_row chacha20-poly1305; }

# --- tinc: switch mode, a TAP device per host bridged with the pod ---

TINC_POD_MTU=1436

# The smallest path MTU tincd on host $1 has confirmed towards node $2, from its last node dump
# ("... pmtu N (min M max K)"), 0 if none yet.
tinc_min_mtu() {
    grep -E "^ *$2 at .* pmtu [0-9]+ \(min [0-9]+ max [0-9]+\)" "$ROW_DIR/tinc-h$1.log" |
        tail -n 1 | sed -E 's/.*\(min ([0-9]+) max.*/\1/' | grep . || echo 0
}
row_tinc() {
    command -v tincd >/dev/null || na "tincd not installed (apt-get install tinc)"
    lab_up
    local i o conf
    for i in 1 2; do
        o=$((3 - i)) conf=$ROW_DIR/tinc-h$i
        mkdir -p "$conf/hosts"
        cat >"$conf/tinc.conf" <<EOF
Name = h$i
Mode = switch
DeviceType = tap
Interface = tinc0
AddressFamily = ipv4
BindToAddress = $(host_ip "$i")
ConnectTo = h$o
EOF
        printf 'Address = %s\nPort = 655\n' "$(host_ip "$i")" >"$conf/hosts/h$i"
        run tincd -c "$conf" -K 2048
    done
    cp "$ROW_DIR/tinc-h1/hosts/h1" "$ROW_DIR/tinc-h2/hosts/h1"
    cp "$ROW_DIR/tinc-h2/hosts/h2" "$ROW_DIR/tinc-h1/hosts/h2"
    for i in 1 2; do
        conf=$ROW_DIR/tinc-h$i
        spawn "$NSP-h$i" "tinc-h$i" tincd -c "$conf" -D -d 1 --pidfile="$conf/tincd.pid"
        TINC_PID[i]=${ROW_PIDS[-1]}
    done
    for i in 1 2; do
        wait_for 10 ip -n "$NSP-h$i" link show dev tinc0 || fail "tincd on h$i made no tinc0 (see tinc-h$i.log)"
        run ip -n "$NSP-h$i" link add br0 mtu "$TINC_POD_MTU" type bridge
        run ip -n "$NSP-h$i" link set tinc0 mtu "$TINC_POD_MTU" master br0 up
        run ip -n "$NSP-h$i" link set br0 up
        pod_add "$i" "10.32.$i.1/16" "$TINC_POD_MTU" br0
    done
    SRC_NS=$NSP-h1-p1 DST_NS=$NSP-h2-p1 DST_IP=10.32.2.1
    # tinc sends frames longer than the path MTU it has confirmed so far (minmtu) over its TCP
    # meta connection until its UDP MTU probes get that far; wait until both daemons report
    # (SIGUSR2: node dump) a minmtu that fits a full pod frame, so that UDP is measured.
    row_settle() {
        local i ok t
        for ((t = 0; t < 40; t++)); do
            ok=0
            for i in 1 2; do
                kill -USR2 "${TINC_PID[i]}" 2>/dev/null
            done
            sleep 1
            for i in 1 2; do
                tinc_min_mtu "$i" "h$((3 - i))" >"$ROW_DIR/tinc-h$i.minmtu"
                (($(cat "$ROW_DIR/tinc-h$i.minmtu") >= TINC_POD_MTU + 14)) && ok=$((ok + 1))
            done
            ((ok == 2)) && { log "tinc: path MTU confirmed after ${t}s"; return 0; }
        done
        log "tinc: path MTU probes did not reach $((TINC_POD_MTU + 14)) within 40 s; big frames may go over TCP"
    }
    PATH_WHAT="h1's tinc device tinc0"
    row_path_bytes() { link_tx_bytes "$H1" tinc0; }
}

# --- nebula: L3, pods routed behind their host ---

NEBULA_MTU=1440
NEBULA_PORT=4242
row_nebula() {
    if ! command -v nebula >/dev/null || ! command -v nebula-cert >/dev/null; then
        na "package not available (nebula, nebula-cert)"
    fi
    lab_up
    local d=$ROW_DIR/nebula i o
    mkdir -p "$d"
    run nebula-cert ca -name "weft-iperf $PREFIX" -out-crt "$d/ca.crt" -out-key "$d/ca.key"
    for i in 1 2; do
        # The host's certificate carries its pod subnet, which the other host routes to it.
        run nebula-cert sign -ca-crt "$d/ca.crt" -ca-key "$d/ca.key" -name "h$i" \
            -ip "192.168.77.$i/24" -subnets "10.32.$i.0/24" -out-crt "$d/h$i.crt" -out-key "$d/h$i.key"
    done
    for i in 1 2; do
        o=$((3 - i))
        cat >"$d/h$i.yml" <<EOF
pki:
  ca: $d/ca.crt
  cert: $d/h$i.crt
  key: $d/h$i.key
static_host_map:
  "192.168.77.$o": ["$(host_ip "$o"):$NEBULA_PORT"]
lighthouse:
  am_lighthouse: false
  hosts: []
listen:
  host: $(host_ip "$i")
  port: $NEBULA_PORT
punchy:
  punch: false
tun:
  disabled: false
  dev: neb0
  mtu: $NEBULA_MTU
  unsafe_routes:
    - route: 10.32.$o.0/24
      via: 192.168.77.$o
      mtu: $NEBULA_MTU
logging:
  level: info
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
EOF
        spawn "$NSP-h$i" "nebula-h$i" nebula -config "$d/h$i.yml"
    done
    for i in 1 2; do
        wait_for 10 ip -n "$NSP-h$i" link show dev neb0 || fail "nebula on h$i made no neb0 (see nebula-h$i.log)"
        pod_route "$i" "$NEBULA_MTU"
    done
    SRC_NS=$NSP-h1-p1 DST_NS=$NSP-h2-p1 DST_IP=10.32.2.2
    PATH_WHAT="h1's nebula device neb0"
    row_path_bytes() { link_tx_bytes "$H1" neb0; }
}

# --- boringtun: userspace WireGuard, L3, pods routed behind their host ---

WG_MTU=1420
WG_PORT=51820
row_boringtun() {
    local bt
    bt=$(command -v boringtun-cli) || na "boringtun-cli not installed (cargo install boringtun-cli)"
    command -v wg >/dev/null || na "wg not installed (apt-get install wireguard-tools)"
    lab_up
    # The interface names are unique to this run: boringtun's control socket is
    # /var/run/wireguard/<name>.sock, a path all namespaces share.
    local d=$ROW_DIR/wg i o name
    mkdir -p "$d"
    for i in 1 2; do
        (umask 077 && wg genkey >"$d/h$i.key")
        wg pubkey <"$d/h$i.key" >"$d/h$i.pub"
    done
    for i in 1 2; do
        name=bt${PREFIX#wi}$i
        WG_NAME[i]=$name
        spawn "$NSP-h$i" "boringtun-h$i" "$bt" --foreground --disable-drop-privileges \
            --log "$ROW_DIR/boringtun-h$i.debug.log" "$name"
    done
    for i in 1 2; do
        o=$((3 - i)) name=${WG_NAME[i]}
        wait_for 10 test -S "/var/run/wireguard/$name.sock" || fail "boringtun on h$i made no control socket"
        run ip netns exec "$NSP-h$i" wg set "$name" private-key "$d/h$i.key" listen-port "$WG_PORT" \
            peer "$(cat "$d/h$o.pub")" endpoint "$(host_ip "$o"):$WG_PORT" \
            allowed-ips "192.168.78.$o/32,10.32.$o.0/24"
        run ip -n "$NSP-h$i" addr add "192.168.78.$i/24" dev "$name"
        run ip -n "$NSP-h$i" link set "$name" mtu "$WG_MTU" up
        run ip -n "$NSP-h$i" route add "10.32.$o.0/24" dev "$name"
        pod_route "$i" "$WG_MTU"
    done
    SRC_NS=$NSP-h1-p1 DST_NS=$NSP-h2-p1 DST_IP=10.32.2.2
    PATH_WHAT="h1's boringtun device ${WG_NAME[1]}"
    row_path_bytes() { link_tx_bytes "$H1" "${WG_NAME[1]}"; }
}

# --- IPv6: the same rows on an IPv6-only underlay, pod to pod over IPv6 ---

v6_pods() { DST_IP=fd10:32::2:1; }
row_underlay6() { V6=1; row_underlay; DST_IP=$(host_ip 2); }
row_vxlan6() { V6=1; row_vxlan; v6_pods; }
row_weft_fast6() { V6=1; row_weft_fast; v6_pods; }
row_weft_sleeve6() { V6=1; row_weft_sleeve; v6_pods; }
row_weft_encrypted6() { V6=1; row_weft_encrypted; v6_pods; }

# --- main ----------------------------------------------------------------------------------------

machine_busy() {
    # Background CPU load before the run, in cores busy (2 s sample).
    local a b
    read -r a _ <<<"$(cpu_ticks)"
    sleep 2
    read -r b _ <<<"$(cpu_ticks)"
    "$PYTHON" -c "print(round(($b - $a) / $(getconf CLK_TCK) / 2, 2))"
}

log "run $PREFIX: rows ${ROWS_TO_RUN[*]}; iperf3 ${TIME} s per run; weft: $WEFT"
BACKGROUND=$(machine_busy)
log "background load before the run: $BACKGROUND cores busy (of $(nproc))"

for row in "${ROWS_TO_RUN[@]}"; do
    ROW_DIR=$RUN_DIR/$row
    mkdir -p "$ROW_DIR"
    log "== $row: ${LABEL[$row]}"
    # The row runs in a subshell of its own (a failure ends only that row), in the background so
    # that a signal reaches on_signal at once rather than when the row is over.
    (
        ROW=$row NSP=$PREFIX-$row
        trap row_teardown EXIT
        trap 'exit 130' INT TERM
        "row_${row//-/_}"
        measure
    ) &
    ROW_SUBSHELL=$!
    wait "$ROW_SUBSHELL"
    rc=$?
    ROW_SUBSHELL=""
    case $rc in
        0) status=ok ;;
        3) status=na ;;
        130) log "interrupted"; exit 130 ;;
        *) status=failed
           [[ -s $ROW_DIR/error ]] || echo "exited with status $rc" >"$ROW_DIR/error" ;;
    esac
    record "$row" "$status"
done

"$PYTHON" "$HERE/report.py" final --results "$RESULTS" --json "$JSON_OUT" --time "$TIME" \
    --ping-count "$PING_COUNT" --ping-interval "$PING_INTERVAL" --background "$BACKGROUND" \
    --weft "$WEFT" --repo "$REPO"
log "results written to $JSON_OUT"
# The chart (benches/src/chart.rs): beside the JSON, when the binary is built
# (`cargo build --release -p weft-benches --bin iperf-chart`; scripts/test.sh builds it).
CHART_BIN=${CHART_BIN:-$REPO/target/release/iperf-chart}
if [[ -x $CHART_BIN ]]; then
    if "$CHART_BIN" "$JSON_OUT" "${JSON_OUT%.json}.svg"; then
        log "chart written to ${JSON_OUT%.json}.svg"
    fi
fi
