#!/usr/bin/env bash
# The NAT lab (issue 15): real kernel NATs in network namespaces that this
# script creates and removes, with the real binaries inside.
#
#            h1 ── nat1 ─┐                 ┌─ nat2 ── h2
#   192.168.1.2   (masq) 10.101.0.2   10.102.0.2 (masq)   192.168.2.2
#                        └──── inet ──────┘
#                            │       │
#                  srv 10.100.0.2   pub 10.103.0.2
#
# `inet` is the internet: it routes between the homes' public addresses, the
# server and a public host, and counts (nft counters) the bytes it forwards
# between the two homes and to and from the server. Each home router
# masquerades its LAN and drops unsolicited inbound packets on its public
# side (the forward and input chains accept only established/related
# traffic from the WAN), as home routers do; a case may make one an
# address-restricted NAT (see `nat`) or a symmetric one. Only addresses inside these
# namespaces are used; nothing is sent anywhere else.
#
# Usage: bash tests/nat-lab/run.sh [CASE...]     (as root; default: every case)
# Environment: TRYST (default target/debug/tryst), the binary under test;
#              LAB_KEEP=1 keeps the work dir (logs) after the run.
# Cases: eim-direct, one-public, nat-timeout, mapping-flush, two-address-server,
#        nat-guess, netcheck, symmetric-both, symmetric-one,
#        symmetric-one-port-restricted.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TRYST="$(realpath "${TRYST:-target/debug/tryst}")"
[[ -x "$TRYST" ]] || { echo "nat-lab: no binary at $TRYST (cargo build -p tryst-tokio)" >&2; exit 2; }
for tool in ip nft conntrack sha256sum; do
    command -v "$tool" >/dev/null || { echo "nat-lab: $tool is missing (apt-get install iproute2 nftables conntrack)" >&2; exit 2; }
done

# A prefix of our own, so two runs (or a leftover) never share a namespace.
P="tl$$"
NAMESPACES=(inet srv pub nat1 h1 nat2 h2)
WORK="$(mktemp -d /tmp/tryst-nat-lab.XXXXXX)"
PIDS=()

# Kills every process inside the lab's namespaces (`ip netns exec` forks,
# so the processes are found by namespace, not by the PIDs of the jobs),
# then the jobs, then removes the namespaces (and their veth links).
remove_world() {
    local ns pid
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$P$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    { wait; } 2>/dev/null || true
    PIDS=()
    for ns in "${NAMESPACES[@]}"; do ip netns del "$P$ns" 2>/dev/null || true; done
}

cleanup() {
    local status=$?
    remove_world
    if [[ $status -ne 0 || -n "${LAB_KEEP:-}" ]]; then
        echo "nat-lab: logs in $WORK" >&2
        if [[ $status -ne 0 ]]; then
            for log in "$WORK"/*.log; do
                [[ -f "$log" ]] || continue
                echo "--- $log (last lines)" >&2
                tail -n 15 "$log" >&2
            done
        fi
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

in_ns() { local ns="$1"; shift; ip netns exec "$P$ns" "$@"; }

fail() { echo "nat-lab: FAIL ($CASE): $*" >&2; exit 1; }

# link A A_IF A_ADDR/LEN B B_IF B_ADDR/LEN: a veth pair between two namespaces.
link() {
    ip link add "$P-$2" type veth peer name "$P-$5"
    ip link set "$P-$2" netns "$P$1" name "$2"
    ip link set "$P-$5" netns "$P$4" name "$5"
    in_ns "$1" ip addr add "$3" dev "$2"
    in_ns "$4" ip addr add "$6" dev "$5"
    in_ns "$1" ip link set "$2" up
    in_ns "$4" ip link set "$5" up
}

# nat NS [MODE]: masquerade the LAN behind the WAN, drop what was not asked
# for on the WAN side. MODE:
# - port (default): Linux masquerade as it is: endpoint-independent,
#   port-preserving mapping with address-and-port-dependent filtering (only
#   what matches a mapping's exact remote address and port gets back in;
#   RFC 4787 "port-restricted cone");
# - random (`masquerade random`): the mapping depends on the destination
#   (a symmetric NAT), filtering as above;
# - address: the same mapping as `port`, with address-dependent filtering
#   (RFC 4787 "address-restricted cone", common in home routers): a set
#   remembers, per mapped port, each remote address the LAN has sent to
#   (filled after masquerade, refreshed by every outbound packet, expiring
#   with the NAT's UDP timeout), and a UDP packet from any port of such an
#   address to that mapped port is let in to the host (dnat, port kept).
nat() {
    local mode="${2:-port}" flags="" timeout host
    [[ "$mode" == random ]] && flags="random"
    in_ns "$1" sysctl -qw net.ipv4.ip_forward=1
    in_ns "$1" nft -f - <<EOF
table ip home {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade $flags
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
        iifname "wan" oifname "lan" ct status dnat accept
        counter comment "unsolicited from the WAN"
    }
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname { "lo", "lan" } accept
    }
}
EOF
    [[ "$mode" == address ]] || return 0
    timeout="$(in_ns "$1" sysctl -n net.netfilter.nf_conntrack_udp_timeout)"
    host="$(in_ns "$1" ip -4 -o addr show dev lan | awk '{ print $4 }' | sed 's|\.1/24$|.2|')"
    in_ns "$1" nft -f - <<EOF
table ip restrict {
    set sent {
        type inet_service . ipv4_addr
        flags timeout
        timeout ${timeout}s
    }
    chain learn {
        type filter hook postrouting priority srcnat + 10; policy accept;
        oifname "wan" meta l4proto udp update @sent { udp sport . ip daddr timeout ${timeout}s }
    }
    chain admit {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" udp dport . ip saddr @sent counter dnat to $host
    }
}
EOF
}

# renat NS MODE: NS's NAT replaced by one of MODE (see `nat`).
renat() {
    in_ns "$1" nft delete table ip home
    nat "$1" "$2"
}

build_world() {
    for ns in "${NAMESPACES[@]}"; do
        ip netns add "$P$ns"
        in_ns "$ns" ip link set lo up
    done
    link inet isrv 10.100.0.1/24 srv wan 10.100.0.2/24
    link inet inat1 10.101.0.1/24 nat1 wan 10.101.0.2/24
    link inet inat2 10.102.0.1/24 nat2 wan 10.102.0.2/24
    link inet ipub 10.103.0.1/24 pub wan 10.103.0.2/24
    link nat1 lan 192.168.1.1/24 h1 eth 192.168.1.2/24
    link nat2 lan 192.168.2.1/24 h2 eth 192.168.2.2/24
    in_ns inet sysctl -qw net.ipv4.ip_forward=1
    in_ns srv ip route add default via 10.100.0.1
    in_ns pub ip route add default via 10.103.0.1
    in_ns nat1 ip route add default via 10.101.0.1
    in_ns nat2 ip route add default via 10.102.0.1
    in_ns h1 ip route add default via 192.168.1.1
    in_ns h2 ip route add default via 192.168.2.1
    nat nat1
    nat nat2
    in_ns inet nft -f - <<'EOF'
table ip lab {
    counter homes {}
    counter server {}
    chain forward {
        type filter hook forward priority filter; policy accept;
        ip saddr { 10.101.0.0/24, 10.102.0.0/24, 10.103.0.0/24 } ip daddr { 10.101.0.0/24, 10.102.0.0/24, 10.103.0.0/24 } counter name "homes"
        ip saddr 10.100.0.0/24 counter name "server"
        ip daddr 10.100.0.0/24 counter name "server"
    }
}
EOF
}

# bytes NAME: the bytes the internet router counted under NAME so far.
bytes() {
    in_ns inet nft list counter ip lab "$1" | awk '/bytes/ { for (i = 1; i <= NF; i++) if ($i == "bytes") print $(i + 1) }'
}

# spawn NS LOG CMD...: a background process in NS, stdout and stderr to LOG.
spawn() {
    local ns="$1" log="$2"
    shift 2
    in_ns "$ns" env RUST_LOG="${RUST_LOG:-info}" "$@" >"$WORK/$log.log" 2>&1 &
    PIDS+=("$!")
}

# wait_line LOG PATTERN [SECONDS]: waits for a line of LOG matching PATTERN;
# prints it.
wait_line() {
    local log="$WORK/$1.log" pattern="$2" limit="${3:-20}" waited=0
    while ! grep -qE -- "$pattern" "$log" 2>/dev/null; do
        sleep 0.1
        waited=$((waited + 1))
        ((waited < limit * 10)) || fail "no line matching '$pattern' in $1.log within ${limit}s"
    done
    grep -m1 -E -- "$pattern" "$log"
}

SERVER_KEY=""
# The address terminals use for the servers, and the one the servers bind.
SERVER_IP=10.100.0.2
SERVER_BIND=10.100.0.2
start_server() {
    spawn srv server "$TRYST" server --data-dir "$WORK/server-$CASE" \
        --control "$SERVER_BIND:7400" --trigger "$SERVER_BIND:7401" "$@"
    SERVER_KEY="$(wait_line server '^server key: ' | sed 's/^server key: //')"
    wait_line server '^trigger: ' >/dev/null
}

# flags NAME: what every terminal-side command of device NAME takes.
flags() {
    echo --name "$1" --server "$SERVER_IP:7400" --trigger "$SERVER_IP:7401" \
        --server-key "$SERVER_KEY" --state-dir "$WORK/$1-state-$CASE"
}

# daemon NS NAME ARGS...: a `tryst terminal` in NS, waited for until online.
daemon() {
    local ns="$1" name="$2"
    shift 2
    # shellcheck disable=SC2046
    spawn "$ns" "$name" "$TRYST" terminal $(flags "$name") "$@"
    wait_line "$name" '^online: ' >/dev/null
}

# connect NS NAME TARGET ARGS...: a one-shot `tryst connect` in NS, its
# stdout lines stamped with the milliseconds since it started; its exit
# status in $CONNECT_STATUS.
CONNECT_STATUS=0
connect() {
    local ns="$1" name="$2" target="$3"
    shift 3
    local started=${EPOCHREALTIME/./}
    set +e
    # shellcheck disable=SC2046
    in_ns "$ns" env RUST_LOG=warn "$TRYST" connect $(flags "$name") "$target" "$@" \
        2>"$WORK/$name-connect.err" |
        while IFS= read -r line; do
            printf '%6d ms  %s\n' $(((${EPOCHREALTIME/./} - started) / 1000)) "$line"
        done >"$WORK/$name-connect.log"
    CONNECT_STATUS=${PIPESTATUS[0]}
    set -e
}

# A file of N MiB of random bytes.
make_file() {
    head -c "$(($2 << 20))" /dev/urandom >"$1"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# check_transfer FILE INBOX: the file arrived intact and the sender says so.
check_transfer() {
    local digest
    digest="$(sha "$1")"
    ((CONNECT_STATUS == 0)) || fail "connect exited $CONNECT_STATUS: $(cat "$WORK"/*-connect.err)"
    grep -q "the receiver verified SHA-256 $digest" "$WORK"/*-connect.log || fail "the sender did not see the digest verified"
    [[ "$(sha "$2/$(basename "$1")")" == "$digest" ]] || fail "the stored file differs"
}

# path_report: time to the direct path and which path carried the bytes.
path_report() {
    local up
    up="$(grep -m1 -E '(direct|relayed) path up' "$WORK"/*-connect.log | awk '{ print $1 }')"
    echo "    connect to path up: ${up:-?} ms; $1"
}

reset_world() {
    SERVER_IP=10.100.0.2
    SERVER_BIND=10.100.0.2
    remove_world
    rm -f "$WORK"/*.log "$WORK"/*.err
    build_world
}

# Both homes behind endpoint-independent NATs: the file goes home to home,
# and the internet router forwards its bytes between the homes, not
# through the server.
case_eim_direct() {
    start_server
    daemon h1 home --allow phone --recv-dir "$WORK/inbox-$CASE"
    make_file "$WORK/file-$CASE.bin" 8
    local homes_before server_before
    homes_before=$(bytes homes)
    server_before=$(bytes server)
    connect h2 phone home --send "$WORK/file-$CASE.bin" --duration 2m
    check_transfer "$WORK/file-$CASE.bin" "$WORK/inbox-$CASE"
    local homes=$(($(bytes homes) - homes_before)) server=$(($(bytes server) - server_before))
    ((homes >= 8 << 20)) || fail "only $homes bytes crossed between the homes"
    ((server < 1 << 20)) || fail "$server bytes went to or from the server"
    path_report "direct: $homes bytes home to home, $server bytes via the server"
}

# One side public, one behind a NAT, both ways round.
case_one_public() {
    start_server
    daemon h1 home --allow laptop --recv-dir "$WORK/inbox-$CASE"
    make_file "$WORK/file-$CASE.bin" 4
    connect pub laptop home --send "$WORK/file-$CASE.bin" --duration 1m
    check_transfer "$WORK/file-$CASE.bin" "$WORK/inbox-$CASE"
    path_report "public to NATed: direct"
    daemon pub office --allow phone --recv-dir "$WORK/inbox2-$CASE"
    rm -f "$WORK"/*-connect.log
    connect h2 phone office --send "$WORK/file-$CASE.bin" --duration 1m
    check_transfer "$WORK/file-$CASE.bin" "$WORK/inbox2-$CASE"
    path_report "NATed to public: direct"
}

# A home NAT whose UDP mappings expire after 10 s (far below the seed's 3
# minutes). With the keepalive interval tryst tells terminals (here 4 s) the
# idle terminal stays reachable; told to keep alive only every 3 minutes,
# the same terminal is not (its NAT dropped the mapping, so the trigger
# never reaches it and the request gets the one refusal).
case_nat_timeout() {
    in_ns nat1 sysctl -qw net.netfilter.nf_conntrack_udp_timeout=10 net.netfilter.nf_conntrack_udp_timeout_stream=10
    start_server --keepalive 4s
    daemon h1 home --allow phone
    sleep 16
    connect h2 phone home --duration 2s
    ((CONNECT_STATUS == 0)) || fail "with 4 s keepalives the terminal was not reachable after 16 s idle (exit $CONNECT_STATUS)"
    grep -q "with home" "$WORK/phone-connect.log" || fail "no session with home"
    echo "    4 s keepalives behind a 10 s NAT timeout: reachable after 16 s idle"

    reset_world
    in_ns nat1 sysctl -qw net.netfilter.nf_conntrack_udp_timeout=10 net.netfilter.nf_conntrack_udp_timeout_stream=10
    start_server --keepalive 180s
    daemon h1 home --allow phone
    sleep 16
    connect h2 phone home --duration 2s
    ((CONNECT_STATUS == 3)) || fail "with 3 min keepalives the terminal should be unreachable (exit $CONNECT_STATUS, want 3)"
    echo "    3 min keepalives behind a 10 s NAT timeout: not reachable (exit 3), as expected"
}

# The home NAT forgets every mapping mid-transfer (`conntrack -F`): the
# terminal's next keepalive registers its new address, the running
# transfer survives, and the next request succeeds.
case_mapping_flush() {
    start_server --keepalive 4s
    daemon h1 home --allow phone --recv-dir "$WORK/inbox-$CASE"
    make_file "$WORK/file-$CASE.bin" 6
    # 6 MiB at 1 MiB/s: the flush lands in the middle.
    (sleep 2 && in_ns nat1 conntrack -F >/dev/null 2>&1 && in_ns nat2 conntrack -F >/dev/null 2>&1) &
    PIDS+=("$!")
    connect h2 phone home --send "$WORK/file-$CASE.bin" --duration 2m --limit-rate 1M
    check_transfer "$WORK/file-$CASE.bin" "$WORK/inbox-$CASE"
    path_report "the transfer survived the flush"
    sleep 6
    rm -f "$WORK"/*-connect.log
    connect h2 phone home --duration 2s
    ((CONNECT_STATUS == 0)) || fail "the request after the flush failed (exit $CONNECT_STATUS)"
    echo "    the next request after the flush succeeded"
}

# Servers on 0.0.0.0 of a host with two addresses; the terminals use the
# second. Keepalive acks and triggers must leave from the address the
# terminal sent to (its NAT let in only answers from there), or the
# terminal is never triggered and every request is refused.
case_two_address_server() {
    in_ns srv ip addr add 10.100.0.3/24 dev wan
    SERVER_BIND=0.0.0.0
    SERVER_IP=10.100.0.3
    start_server
    daemon h1 home --allow phone --recv-dir "$WORK/inbox-$CASE"
    make_file "$WORK/file-$CASE.bin" 2
    connect h2 phone home --send "$WORK/file-$CASE.bin" --duration 1m
    check_transfer "$WORK/file-$CASE.bin" "$WORK/inbox-$CASE"
    path_report "servers on 0.0.0.0, reached at their second address: answered from it"
}

# nat_row NAME WANT: waits (up to 10 s) until `tryst status` shows device
# NAME's row with WANT in it (its NAT type guess), and prints the row.
nat_row() {
    local name="$1" want="$2" row="" waited=0
    while ((waited < 100)); do
        row="$(in_ns srv "$TRYST" status --data-dir "$WORK/server-$CASE" 2>/dev/null | grep -E "^$name +" || true)"
        [[ "$row" == *"$want"* ]] && { echo "    $row"; return 0; }
        sleep 0.1
        waited=$((waited + 1))
    done
    fail "status never showed '$want' for $name (last row: ${row:-none})"
}

# The servers' NAT type guess (operator only) on `tryst status`: a
# terminal on the public host, one behind the ordinary home NAT (Linux
# masquerade keeps the source port), and one behind `masquerade random`
# (a symmetric NAT: a random port per destination).
case_nat_guess() {
    renat nat2 random
    start_server
    daemon pub office
    daemon h1 home
    daemon h2 phone
    nat_row office "none (public address)"
    nat_row home "NAT, port preserved"
    nat_row phone "NAT, port rewritten"
    in_ns srv "$TRYST" status --json --data-dir "$WORK/server-$CASE" >"$WORK/status.json"
    grep -q '"nat":"NAT, port rewritten"\|"nat": "NAT, port rewritten"' "$WORK/status.json" ||
        fail "status --json has no rewritten-port guess: $(cat "$WORK/status.json")"
}

# `tryst netcheck` against the trigger server's probe port: behind the
# ordinary home NAT (masquerade keeps one mapping per socket) the mapping is
# endpoint-independent and the filtering address-and-port-dependent (the
# echo from the server's other port does not get in); behind the
# address-restricted home NAT the echo gets in (one server address cannot
# tell address-dependent from endpoint-independent filtering, and netcheck
# says so); behind `masquerade random` it varies by
# destination; behind a NAT whose UDP mappings expire after 15 s the idle
# time a mapping survives is reported under 15 s.
netcheck_json() {
    local ns="$1" name="$2"
    shift 2
    # shellcheck disable=SC2046
    in_ns "$ns" env RUST_LOG=warn "$TRYST" netcheck $(flags "$name") --json "$@" 2>"$WORK/$name-netcheck.err" ||
        fail "netcheck in $ns failed: $(cat "$WORK/$name-netcheck.err")"
}
case_netcheck() {
    renat nat2 random
    start_server --probe-listen "$SERVER_BIND:7403"
    local eim sym
    eim=$(netcheck_json h1 home --max-idle 5s)
    echo "    masquerade: $eim"
    grep -q '"mapping":"endpoint-independent"' <<<"$eim" || fail "masquerade: mapping not endpoint-independent: $eim"
    grep -q '"filtering":"address-and-port-dependent"' <<<"$eim" || fail "masquerade: filtering not port-dependent: $eim"
    renat nat1 address
    local restricted
    restricted=$(netcheck_json h1 home --max-idle 5s)
    echo "    address-restricted: $restricted"
    grep -q '"mapping":"endpoint-independent"' <<<"$restricted" || fail "address-restricted: mapping not endpoint-independent: $restricted"
    grep -q '"filtering":"endpoint-independent or address-dependent"' <<<"$restricted" ||
        fail "address-restricted: filtering not address-dependent: $restricted"
    sym=$(netcheck_json h2 phone --max-idle 5s)
    echo "    masquerade random: $sym"
    grep -q '"mapping":"varies by destination"' <<<"$sym" || fail "masquerade random: mapping does not vary: $sym"

    reset_world
    in_ns nat1 sysctl -qw net.netfilter.nf_conntrack_udp_timeout=15 net.netfilter.nf_conntrack_udp_timeout_stream=15
    start_server --probe-listen "$SERVER_BIND:7403"
    local short survived
    short=$(netcheck_json h1 home --max-idle 20s)
    echo "    15 s NAT timeout: $short"
    survived=$(sed -n 's/.*"survived_secs":\([0-9]*\).*/\1/p' <<<"$short")
    [[ -n "$survived" ]] || fail "15 s NAT timeout: no idle time survived: $short"
    ((survived < 15)) || fail "15 s NAT timeout: survived $survived s, not under 15 s"
    grep -q '"survived":false' <<<"$short" || fail "15 s NAT timeout: every probe survived: $short"
}

# relay_transfer PATH: with the servers' relay on, h2's phone sends 8 MiB
# to h1's home; the file arrives intact and `connect` says "PATH path up"
# (direct or relayed). HOMES and SERVER: the bytes the internet router
# counted meanwhile between the homes and to and from the server.
HOMES=0
SERVER=0
relay_transfer() {
    start_server --relay "$SERVER_BIND:7402"
    daemon h1 home --allow phone --recv-dir "$WORK/inbox-$CASE"
    make_file "$WORK/file-$CASE.bin" 8
    local homes_before server_before
    homes_before=$(bytes homes)
    server_before=$(bytes server)
    connect h2 phone home --send "$WORK/file-$CASE.bin" --duration 2m
    check_transfer "$WORK/file-$CASE.bin" "$WORK/inbox-$CASE"
    grep -q "$1 path up" "$WORK"/phone-connect.log || fail "the path was not $1: $(cat "$WORK"/phone-connect.log)"
    HOMES=$(($(bytes homes) - homes_before))
    SERVER=$(($(bytes server) - server_before))
}

# Symmetric NATs (`masquerade random`) on both sides: punching cannot get
# through, the session goes through the server's relay and the file
# arrives intact; the internet router sees its bytes go to and from the
# server (both legs: at least twice the file), not home to home.
case_symmetric_both() {
    renat nat1 random
    renat nat2 random
    relay_transfer relayed
    ((SERVER >= 16 << 20)) || fail "only $SERVER bytes went through the server (relay)"
    path_report "relayed: $SERVER bytes via the server, $HOMES bytes home to home"
}

# A symmetric NAT on one side only, against the lab's home NAT, which
# filters by address and port (Linux masquerade: an inbound packet must come
# from the exact address and port it sent to). The symmetric side's packets
# come from a port the home never sent to, and the home's go to a mapping
# the symmetric NAT made for the server only: neither gets through (a real
# port-restricted NAT behaves the same), so the session goes relayed and the
# file arrives intact. Against an address-restricted home NAT the same pair
# goes direct (case symmetric-one).
case_symmetric_one_port_restricted() {
    renat nat2 random
    relay_transfer relayed
    ((SERVER >= 16 << 20)) || fail "only $SERVER bytes went through the server (relay)"
    path_report "relayed: $SERVER bytes via the server, $HOMES bytes home to home"
}

# A symmetric NAT on one side (`masquerade random`), an address-restricted
# home NAT on the other (endpoint-independent mapping, address-dependent
# filtering, as many home routers do). The symmetric side's packets reach
# the home from a port the home never sent to, but from an address it has
# sent to, so they get in; the home answers the source they came from (the
# peer path follows the newer authenticated source), which is the mapping
# the symmetric NAT made for the home, so the answers get in there too: the
# file goes home to home, not through the relay.
case_symmetric_one() {
    renat nat1 address
    renat nat2 random
    relay_transfer direct
    ((HOMES >= 8 << 20)) || fail "only $HOMES bytes crossed between the homes"
    ((SERVER < 1 << 20)) || fail "$SERVER bytes went to or from the server"
    # The home NAT's address filter let the symmetric side's new port in.
    local admitted
    admitted="$(in_ns nat1 nft list chain ip restrict admit | awk '/packets/ { for (i = 1; i <= NF; i++) if ($i == "packets") print $(i + 1) }')"
    ((admitted > 0)) || fail "the address-restricted filter admitted nothing"
    path_report "direct: $HOMES bytes home to home, $SERVER bytes via the server; $admitted new flows let in by address"
}

ALL_CASES=(eim-direct one-public nat-timeout mapping-flush two-address-server nat-guess netcheck symmetric-both symmetric-one symmetric-one-port-restricted)
CASES=("$@")
((${#CASES[@]})) || CASES=("${ALL_CASES[@]}")
passed=0
for CASE in "${CASES[@]}"; do
    fn="case_${CASE//-/_}"
    declare -F "$fn" >/dev/null || { echo "nat-lab: no case $CASE (cases: ${ALL_CASES[*]})" >&2; exit 2; }
    echo "nat-lab: $CASE"
    reset_world
    started=$SECONDS
    "$fn"
    echo "nat-lab: $CASE passed ($((SECONDS - started)) s)"
    passed=$((passed + 1))
done
echo "nat-lab: $passed of ${#CASES[@]} cases passed"
