#!/usr/bin/env bash
# bench/run.sh: throughput of paster's serving path against a baseline,
# measured in one run under the same load (machines here are noisy: ratios
# hold, absolute numbers do not).
#
# Every target is a server process serving the same hello handler; all are
# started, then bench/cmd/load runs them in alternating rounds and prints
# each one's req/s and its ratio to the baseline (goal >= GOAL).
#
#   bench/run.sh                 all targets
#   bench/run.sh paster-http     the baseline and the named targets
#   bench/run.sh parked          10,000 parked waiters (see below)
#   bench/run.sh reload          reloads under load (bench/reload.sh)
#   bench/run.sh cluster         the Core over NATS, two nodes (see below)
#
# Knobs (environment): CONNS (16), DURATION (1s), ROUNDS (20), WARMUP (1s),
# GOAL (0.95), PIN=1 to pin servers to CPU 0 and the load generator to the
# other CPUs with taskset.
#
# Adding a target: add its name to TARGETS and a start_NAME function that
# runs, in the foreground, a command serving GET / on a free loopback port
# and printing "listening HOST:PORT" as the first line on stdout. Build what
# it needs in build().
set -euo pipefail

cd "$(dirname "$0")/.."

# Target parked is of another kind: issue 4's parked-waiters benchmark
# (scenario/parked_bench_test.go). It holds 10,000 HTTP requests parked in
# WaitForSignal at once, with waitapp compiled in and in its plugin, and
# reports the memory per parked request and the time for one Signal (which
# must wake 10,000) to answer them all; the plugin row reads against the
# in-process one. PARKED_ROUNDS (1) rounds per mode.
if [[ ${1:-} == parked ]]; then
	exec go test -run '^$' -bench ParkedWaiters -benchtime "${PARKED_ROUNDS:-1}x" ./scenario
fi

# Target reload is issue 5's reload benchmark: paster serve under load while
# its INI is rewritten and reloaded many times (bench/reload.sh).
if [[ ${1:-} == reload ]]; then
	exec bench/reload.sh
fi

# Target cluster is issue 11's benchmark (runner/natscore BenchmarkCluster):
# two nodes of the NATS Core on one nats-server started in the test process,
# against the in-memory Core in the same run: cross-node Signal latency
# p50/p99 (goal: p50 < 2 ms), 10,000 waiters split over both nodes woken by
# one Signal (goal: all answered < 500 ms), publish throughput and
# cross-node Fetch latency. CLUSTER_ROUNDS (1) rounds.
if [[ ${1:-} == cluster ]]; then
	exec go test -run '^$' -bench Cluster -benchtime "${CLUSTER_ROUNDS:-1}x" ./runner/natscore
fi

BASELINE=plain
TARGETS=(paster-http paster-plugin reverse-proxy)

CONNS=${CONNS:-16}
DURATION=${DURATION:-1s}
ROUNDS=${ROUNDS:-20}
WARMUP=${WARMUP:-1s}
GOAL=${GOAL:-0.95}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

build() {
	echo "building into $WORK ..." >&2
	go build -o "$WORK/load" ./bench/cmd/load
	go build -o "$WORK/benchserve" ./bench/cmd/benchserve
	go build -o "$WORK/plugins/" ./examples/hello/cmd/paster-plugin-hello
}

# Targets. Each start_NAME serves hello and prints "listening ADDR".
start_plain() { exec "$WORK/benchserve" -target plain; }
start_paster-http() { exec "$WORK/benchserve" -target paster-http; }
start_paster-plugin() { exec "$WORK/benchserve" -target paster-plugin -plugin-dir "$WORK/plugins"; }
start_reverse-proxy() { exec "$WORK/benchserve" -target reverse-proxy; }

SERVER_PIN=()
LOAD_PIN=()
if [[ "${PIN:-0}" == 1 ]] && command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
	SERVER_PIN=(taskset -c 0)
	LOAD_PIN=(taskset -c "1-$(($(nproc) - 1))")
fi

# start NAME: runs start_NAME in the background and sets URL to its address.
URL=
start() {
	local name=$1 fifo="$WORK/$1.fifo" fd line
	mkfifo "$fifo"
	if [[ ${#SERVER_PIN[@]} -gt 0 ]]; then
		"${SERVER_PIN[@]}" bash -c "$(declare -f "start_$name"); WORK='$WORK'; start_$name" >"$fifo" 2>"$WORK/$name.log" &
	else
		"start_$name" >"$fifo" 2>"$WORK/$name.log" &
	fi
	PIDS+=($!)
	exec {fd}<"$fifo" # stays open: the server may write more
	if ! read -r -u "$fd" line || [[ $line != listening\ * ]]; then
		echo "target $name did not start; its log:" >&2
		cat "$WORK/$name.log" >&2
		exit 1
	fi
	URL="http://${line#listening }/"
}

selected=("${TARGETS[@]}")
if [[ $# -gt 0 ]]; then
	selected=("$@")
fi
for name in "${selected[@]}"; do
	if ! declare -F "start_$name" >/dev/null; then
		echo "unknown target $name (have: $BASELINE ${TARGETS[*]})" >&2
		exit 2
	fi
done

build
start "$BASELINE"
args=("$BASELINE=$URL")
for name in "${selected[@]}"; do
	start "$name"
	args+=("$name=$URL")
done
echo "go $(go env GOVERSION), $(nproc) CPUs, $(uname -sr)"
status=0
# paster-http is held to GOAL against plain net/http; the plugin path is
# compared with the reverse proxy users would otherwise put in front of a
# separate app server (goal: at least as fast).
"${LOAD_PIN[@]}" "$WORK/load" -c "$CONNS" -d "$DURATION" -rounds "$ROUNDS" -warmup "$WARMUP" \
	-goal "$GOAL" -gated paster-http -compare "paster-plugin/reverse-proxy>=1.0" "${args[@]}" || status=$?
exit "$status"
