#!/usr/bin/env bash
# The relay's throughput beside coturn's TURN relay (issue 15, item 5), on
# loopback, in the same run, run by run interleaved.
#
# Everything runs in a network namespace of its own (root needed), on its
# loopback only, so the rules below touch nothing else on the host:
# - the tryst row: `tryst server --relay` with a receiving `tryst terminal`
#   and CLIENTS senders at once (`tryst connect --send FILE`, one session
#   each: the relay limits a session to 12.5 MB/s); an nftables rule drops UDP
#   between any two ports that are not the servers' (or coturn's), so the
#   terminals cannot punch a direct path and the file goes through the
#   relay, end-to-end encrypted, as behind two symmetric NATs;
# - the coturn row: Debian's `turnserver` (no auth, UDP only), its
#   `turnutils_peer` (an echo peer) and `turnutils_uclient` as the load
#   (TURN_CLIENTS allocations, each sending MESSAGES datagrams of the same
#   size as tryst's with `-z 0`, which the peer echoes back through the
#   relay). uclient paces each allocation (about one datagram per few ms
#   whatever -z says), so coturn's figure is bounded by its load generator;
#   more TURN_CLIENTS push it further (coturn's default quotas refuse a few
#   hundred allocations from one client).
# Both relays are measured alike: nft counters on the namespace's output
# hook count the bytes each relay SENDS (tryst: from its relay port; coturn:
# from its listening port to the clients and from its relay ports to the
# peer), sampled every 20 ms; the throughput is those bytes over the time from
# the first sample that saw them grow to the last. The tryst row also gives
# the files' goodput (their sizes / the senders' wall time, setup included).
#
# Usage: sudo bash bench/relay-vs-turn.sh      (from the repository root)
# Environment: TRYST (default target/release/tryst; TRYST=target/release/tryst-std
#              for the std driver), SIZE MiB per tryst transfer (default 16),
#              RUNS (3), CLIENTS tryst sessions at once (1), TURN_CLIENTS
#              (64), MESSAGES per TURN client (1000), DGRAM
#              bytes of each coturn payload (default: the size of tryst's
#              data datagrams in the first run), LAB_KEEP=1 keeps the logs.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TRYST="$(realpath "${TRYST:-target/release/tryst}")"
SIZE="${SIZE:-16}"
RUNS="${RUNS:-3}"
CLIENTS="${CLIENTS:-1}"
TURN_CLIENTS="${TURN_CLIENTS:-64}"
MESSAGES="${MESSAGES:-1000}"
[[ -x "$TRYST" ]] || { echo "relay-vs-turn: no binary at $TRYST (cargo build --release -p tryst-tokio)" >&2; exit 2; }
for tool in ip nft turnserver turnutils_uclient turnutils_peer cmp; do
    command -v "$tool" >/dev/null || { echo "relay-vs-turn: $tool is missing (apt-get install iproute2 nftables coturn)" >&2; exit 2; }
done

NS="trb$$"
WORK="$(mktemp -d /tmp/tryst-relay-vs-turn.XXXXXX)"
PIDS=()

cleanup() {
    local status=$? pid
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    { wait; } 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    if [[ $status -ne 0 || -n "${LAB_KEEP:-}" ]]; then
        echo "relay-vs-turn: logs in $WORK" >&2
        [[ $status -ne 0 ]] && tail -n 5 "$WORK"/*.log >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

in_ns() { ip netns exec "$NS" "$@"; }
fail() { echo "relay-vs-turn: FAIL: $*" >&2; exit 1; }

# The tryst servers' ports and coturn's (its relay ports sit above the
# kernel's ephemeral range, so no terminal socket can take one).
TURN_RELAY_PORTS=61000-61999
ip netns add "$NS"
in_ns ip link set lo up
in_ns nft -f - <<EOF
table inet bench {
    counter tryst {}
    counter turn {}
    counter tryst_data {}
    counter tryst_in {}
    chain output {
        type filter hook output priority filter; policy accept;
        udp sport 7402 counter name "tryst"
        udp sport 7402 meta length >= 1000 counter name "tryst_data"
        udp sport 3478 counter name "turn"
        udp sport $TURN_RELAY_PORTS udp dport 3480 counter name "turn"
    }
    chain input {
        type filter hook input priority filter; policy accept;
        udp dport 7402 counter name "tryst_in"
        udp sport != { 7400-7403, 3478, 3480, $TURN_RELAY_PORTS } udp dport != { 7400-7403, 3478, 3480, $TURN_RELAY_PORTS } counter drop comment "no direct path"
    }
}
EOF

# counter NAME: "bytes packets" the output hook counted under NAME so far.
counter() {
    in_ns nft list counter inet bench "$1" |
        awk '/bytes/ { for (i = 1; i <= NF; i++) { if ($i == "packets") p = $(i + 1); if ($i == "bytes") b = $(i + 1) } } END { print b, p }'
}

# rcvbuf_errors: UDP datagrams the namespace's sockets dropped for a full
# receive buffer so far.
rcvbuf_errors() {
    in_ns awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp
}

# sample NAME OUT: until killed, appends "microseconds bytes" of counter NAME
# to OUT every 20 ms.
sample() {
    while :; do
        echo "${EPOCHREALTIME/./} $(counter "$1" | cut -d' ' -f1)"
        sleep 0.02
    done >"$2"
}

# rate OUT: MB/s (10^6) over the samples of OUT in which the counter grew:
# bytes from the last sample before the first growth to the last growth,
# over that time.
rate() {
    awk 'NR == 1 { b0 = $2; t0 = $1; pb = $2; pt = $1; next }
         $2 > pb { if (!start) { start = 1; t0 = pt; b0 = pb } t1 = $1; b1 = $2 }
         { pb = $2; pt = $1 }
         END { if (!start || t1 <= t0) print "0.0"; else printf "%.1f\n", (b1 - b0) / (t1 - t0) }' "$1"
}

wait_line() {
    local log="$WORK/$1.log" pattern="$2" waited=0
    while ! grep -qE -- "$pattern" "$log" 2>/dev/null; do
        sleep 0.1
        waited=$((waited + 1))
        ((waited < 200)) || fail "no line matching '$pattern' in $1.log"
    done
    grep -m1 -E -- "$pattern" "$log"
}

spawn() {
    local log="$1"
    shift
    in_ns env RUST_LOG="${RUST_LOG:-warn,tryst=info}" "$@" >"$WORK/$log.log" 2>&1 &
    PIDS+=("$!")
}

head -c "$((SIZE << 20))" /dev/urandom >"$WORK/file-1.bin"
for i in $(seq 2 "$CLIENTS"); do ln "$WORK/file-1.bin" "$WORK/file-$i.bin"; done

# The tryst servers (with the relay) and the receiving terminal, once.
spawn server "$TRYST" server --data-dir "$WORK/server" --control 127.0.0.1:7400 \
    --trigger 127.0.0.1:7401 --relay 127.0.0.1:7402
KEY="$(wait_line server '^server key: ' | sed 's/^server key: //')"
wait_line server '^trigger: ' >/dev/null
flags() {
    echo --name "$1" --server 127.0.0.1:7400 --trigger 127.0.0.1:7401 --server-key "$KEY" \
        --state-dir "$WORK/$1-state"
}
# shellcheck disable=SC2046
spawn receiver "$TRYST" terminal $(flags bench-recv) $(for i in $(seq 1 "$CLIENTS"); do echo --allow "bench-send-$i"; done) \
    --recv-dir "$WORK/inbox"
wait_line receiver '^online: ' >/dev/null

# coturn and its echo peer, once.
spawn turnserver turnserver --no-cli --no-tls --no-dtls --no-auth --listening-ip 127.0.0.1 \
    --listening-port 3478 --relay-ip 127.0.0.1 --min-port "${TURN_RELAY_PORTS%-*}" \
    --max-port "${TURN_RELAY_PORTS#*-}" --allow-loopback-peers --log-file stdout --simple-log \
    --no-stdout-log --pidfile "$WORK/turnserver.pid"
spawn peer turnutils_peer -L 127.0.0.1 -p 3480
sleep 1

TRYST_RATES=()
GOODPUTS=()
TURN_RATES=()
TRYST_DGRAM=""
for run in $(seq 1 "$RUNS"); do
    # tryst: CLIENTS transfers through the relay at once (one session
    # each; the relay limits one session to 12.5 MB/s by default).
    rm -f "$WORK"/inbox/file-*.bin
    sample tryst "$WORK/tryst-$run.samples" &
    sampler=$!
    PIDS+=("$sampler")
    before="$(counter tryst)"
    before_in="$(counter tryst_in)"
    before_drops="$(rcvbuf_errors)"
    started=${EPOCHREALTIME/./}
    senders=()
    for i in $(seq 1 "$CLIENTS"); do
        # shellcheck disable=SC2046
        in_ns env RUST_LOG=warn "$TRYST" connect $(flags "bench-send-$i") bench-recv \
            --send "$WORK/file-$i.bin" --duration 10m >"$WORK/connect-$run-$i.log" 2>&1 &
        senders+=("$!")
    done
    for i in $(seq 1 "$CLIENTS"); do
        wait "${senders[$((i - 1))]}" || fail "connect $i exited $?: $(tail -n 5 "$WORK/connect-$run-$i.log")"
    done
    ended=${EPOCHREALTIME/./}
    sleep 0.1
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    for i in $(seq 1 "$CLIENTS"); do
        grep -q "relayed path up" "$WORK/connect-$run-$i.log" ||
            fail "transfer $i did not go through the relay: $(cat "$WORK/connect-$run-$i.log")"
        cmp -s "$WORK/file-$i.bin" "$WORK/inbox/file-$i.bin" || fail "received file $i differs"
    done
    after="$(counter tryst)"
    after_in="$(counter tryst_in)"
    bytes=$((${after% *} - ${before% *}))
    packets=$((${after#* } - ${before#* }))
    bytes_in=$((${after_in% *} - ${before_in% *}))
    drops=$(($(rcvbuf_errors) - before_drops))
    data="$(counter tryst_data)"
    [[ -n "$TRYST_DGRAM" ]] || TRYST_DGRAM=$((${data% *} / ${data#* }))
    # The relay sends GSO batches, which the output hook counts before
    # segmentation: a mean above one full-size datagram (1472 bytes of UDP
    # payload, the peer's largest) is made of full-size datagrams.
    ((TRYST_DGRAM <= 1500)) || TRYST_DGRAM=1500
    TRYST_RATES+=("$(rate "$WORK/tryst-$run.samples")")
    GOODPUTS+=("$(awk -v s=$((CLIENTS * SIZE << 20)) -v t=$((ended - started)) 'BEGIN { printf "%.1f\n", s / t }')")
    echo "run $run: tryst relay sent $bytes bytes in $packets datagrams (mean $((bytes / packets)) B with IP/UDP, acks included; data $TRYST_DGRAM B): ${TRYST_RATES[-1]} MB/s; files' goodput ${GOODPUTS[-1]} MB/s"
    echo "run $run: the relay got $bytes_in bytes (sent / got $(awk -v s="$bytes" -v g="$bytes_in" 'BEGIN { if (g > 0) printf "%.2f", s / g }')), sent $(awk -v s="$bytes" -v f=$((CLIENTS * SIZE << 20)) 'BEGIN { printf "%.2f", s / f }')x the files' bytes; UDP receive-buffer drops in the namespace: $drops"

    # coturn: the same datagram size as tryst's data packets (the mean of
    # those of 1000 bytes or more the relay sent in the first run, less
    # IP+UDP headers and TURN's 4-byte ChannelData header).
    DGRAM="${DGRAM:-$((TRYST_DGRAM - 28 - 4))}"
    sample turn "$WORK/turn-$run.samples" &
    sampler=$!
    PIDS+=("$sampler")
    before="$(counter turn)"
    in_ns turnutils_uclient -c -e 127.0.0.1 -r 3480 -l "$DGRAM" -n "$MESSAGES" -m "$TURN_CLIENTS" -z 0 \
        127.0.0.1 >"$WORK/uclient-$run.log" 2>&1 || fail "turnutils_uclient exited $?"
    sleep 0.1
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    after="$(counter turn)"
    bytes=$((${after% *} - ${before% *}))
    packets=$((${after#* } - ${before#* }))
    ((packets > 0)) || fail "coturn relayed nothing: $(tail -n 5 "$WORK/uclient-$run.log")"
    TURN_RATES+=("$(rate "$WORK/turn-$run.samples")")
    lost="$(grep -m1 -o 'Total lost packets.*' "$WORK/uclient-$run.log" || true)"
    echo "run $run: coturn relay sent $bytes bytes in $packets datagrams (payload $DGRAM B): ${TURN_RATES[-1]} MB/s; uclient: ${lost:-?}"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
t="$(median "${TRYST_RATES[@]}")"
g="$(median "${GOODPUTS[@]}")"
c="$(median "${TURN_RATES[@]}")"
echo
echo "relay sends, medians of $RUNS runs ($(basename "$TRYST"): $CLIENTS sessions x $SIZE MiB; coturn: $TURN_CLIENTS clients x $MESSAGES datagrams of $DGRAM B):"
echo "  tryst relay   $t MB/s   (files' goodput $g MB/s)"
echo "  coturn        $c MB/s"
awk -v t="$t" -v c="$c" 'BEGIN { if (c > 0) printf "  ratio tryst / coturn: %.2f\n", t / c }'
