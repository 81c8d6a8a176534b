#!/usr/bin/env bash
# bench/run.sh: paster's serving path against baselines measured in the same
# run under the same load (machines here are noisy: ratios hold, absolute
# numbers do not).
#
#   bench/run.sh                 hello, cpu and bulk, one after the other
#   bench/run.sh hello           the hello handler: paster-http against plain
#                                net/http (goal >= GOAL), paster-plugin
#                                against httputil.ReverseProxy in front of
#                                a separate app server (goal >= 2.0) and
#                                against paster-http (aim >= 0.5); and
#                                paster-serve (paster-http with the layers
#                                paster serve puts around every app: reload
#                                Mount, /metrics instrument), reported only
#   bench/run.sh cpu             a handler doing ~200 us of CPU work, in a
#                                plugin against compiled in (goal >= 0.9),
#                                and the CPU a round trip to another
#                                process costs on this machine
#   bench/run.sh bulk            1 GiB up and 1 GiB down through a plugin app
#                                (sink, source) against the same app compiled
#                                in (goal >= 0.8) with flat RSS in every
#                                process (bench/cmd/bulk)
#   bench/run.sh paster-http     the hello baseline and the named targets
#   bench/run.sh parked          10,000 parked waiters (see below)
#   bench/run.sh reload          reloads under load (bench/reload.sh)
#   bench/run.sh cluster         the Core over NATS, two nodes (see below)
#
# hello and cpu: every target is a server process; bench/cmd/load runs them
# in alternating rounds and prints each one's req/s and its ratio to the
# baseline. Knobs (environment): CONNS (16), DURATION (1s), ROUNDS (20),
# WARMUP (1s), GOAL (0.95), PIN=1 to pin servers to CPU 0 and the load
# generator to the other CPUs with taskset; BULK_SIZE (1073741824),
# BULK_ROUNDS (3) for bulk; HOP_TRIPS (20000) for the process hop.
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
# Goals (issue 12): a parked plugin request costs at most 40 KB, and one
# Signal answers 10,000 plugin waiters within 250 ms.
if [[ ${1:-} == parked ]]; then
	out=$(mktemp)
	trap 'rm -f "$out"' EXIT
	go test -run '^$' -bench ParkedWaiters -benchtime "${PARKED_ROUNDS:-1}x" ./scenario | tee "$out"
	awk '/ParkedWaiters\/plugin/ {
		for (i = 1; i < NF; i++) { if ($(i+1) == "B/parked") kb = $i / 1000; if ($(i+1) == "wake-all-ms") ms = $i }
		printf "plugin: %.1f KB per parked request (goal <= 40: %s), all 10,000 answered in %.0f ms (goal <= 250: %s)\n",
			kb, kb <= 40 ? "ok" : "ABOVE", ms, ms <= 250 ? "ok" : "ABOVE"
		found = 1; if (kb > 40 || ms > 250) bad = 1
	} END { exit !found ? 1 : bad ? 3 : 0 }' "$out"
	exit
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
TARGETS=(paster-http paster-serve paster-plugin reverse-proxy)
# Targets of the cpu and bulk sets (their own baselines): bench/benchdist's
# app compiled in and from its plugin.
SETS=(hello cpu bulk)

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
	go build -o "$WORK/bulk" ./bench/cmd/bulk
	go build -o "$WORK/plugins/" ./examples/hello/cmd/paster-plugin-hello ./bench/cmd/paster-plugin-bench
}

# Targets. Each start_NAME serves hello and prints "listening ADDR".
start_plain() { exec "$WORK/benchserve" -target plain; }
start_paster-http() { exec "$WORK/benchserve" -target paster-http; }
start_paster-serve() { exec "$WORK/benchserve" -target paster-serve; }
start_paster-plugin() { exec "$WORK/benchserve" -target paster-plugin -plugin-dir "$WORK/plugins"; }
start_reverse-proxy() { exec "$WORK/benchserve" -target reverse-proxy; }
start_bench-inproc() { exec "$WORK/benchserve" -target bench-inproc; }
start_bench-plugin() { exec "$WORK/benchserve" -target bench-plugin -plugin-dir "$WORK/plugins"; }

SERVER_PIN=()
LOAD_PIN=()
if [[ "${PIN:-0}" == 1 ]] && command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
	SERVER_PIN=(taskset -c 0)
	LOAD_PIN=(taskset -c "1-$(($(nproc) - 1))")
fi

# start NAME: runs start_NAME in the background, once, and sets URL to its
# address and PID to its process.
URL=
PID=
declare -A STARTED_URL STARTED_PID
start() {
	local name=$1 fifo="$WORK/$1.fifo" fd line
	if [[ -n ${STARTED_URL[$name]:-} ]]; then
		URL=${STARTED_URL[$name]} PID=${STARTED_PID[$name]}
		return
	fi
	mkfifo "$fifo"
	if [[ ${#SERVER_PIN[@]} -gt 0 ]]; then
		"${SERVER_PIN[@]}" bash -c "$(declare -f "start_$name"); WORK='$WORK'; start_$name" >"$fifo" 2>"$WORK/$name.log" &
	else
		"start_$name" >"$fifo" 2>"$WORK/$name.log" &
	fi
	PID=$!
	PIDS+=("$PID")
	exec {fd}<"$fifo" # stays open: the server may write more
	if ! read -r -u "$fd" line || [[ $line != listening\ * ]]; then
		echo "target $name did not start; its log:" >&2
		cat "$WORK/$name.log" >&2
		exit 1
	fi
	URL="http://${line#listening }/"
	STARTED_URL[$name]=$URL STARTED_PID[$name]=$PID
}

# hello [TARGET...]: the hello set (all of TARGETS by default).
run_hello() {
	local selected=("${TARGETS[@]}") args name
	if [[ $# -gt 0 ]]; then
		selected=("$@")
	fi
	start "$BASELINE"
	args=("$BASELINE=$URL")
	for name in "${selected[@]}"; do
		start "$name"
		args+=("$name=$URL")
	done
	# paster-http is held to GOAL against plain net/http; the plugin path
	# is compared with the reverse proxy users would otherwise put in front
	# of a separately shipped app server, and with the app compiled in.
	"${LOAD_PIN[@]}" "$WORK/load" -c "$CONNS" -d "$DURATION" -rounds "$ROUNDS" -warmup "$WARMUP" \
		-goal "$GOAL" -gated paster-http \
		-compare "paster-plugin/reverse-proxy>=2.0" -compare "paster-plugin/paster-http>=0.5" "${args[@]}"
}

# cpu: a handler doing ~200 us of CPU work per request, in its plugin
# against compiled in.
run_cpu() {
	local inproc plugin
	start bench-inproc
	inproc=$URL
	start bench-plugin
	plugin=$URL
	"${LOAD_PIN[@]}" "$WORK/load" -c "$CONNS" -d "$DURATION" -rounds "$ROUNDS" -warmup "$WARMUP" \
		-goal 0.9 "cpu-inproc=${inproc}cpu" "cpu-plugin=${plugin}cpu"
	# What sits under that ratio on this machine: the CPU one round trip
	# to another process costs both processes, on one P each as light
	# processes run (transport's BenchmarkProcessHop; its package doc).
	# The plugin path makes one such round trip per request more than
	# the in-process path. HOP_TRIPS (20000) round trips each.
	GOMAXPROCS=1 go test -run '^$' -bench 'ProcessHop/(socket|http)$' -benchtime "${HOP_TRIPS:-20000}x" \
		./plugins/internal/transport | awk '/^BenchmarkProcessHop/ {
			for (i = 1; i < NF; i++) if ($(i+1) == "cpu-us/op") v = $i
			name = $1; sub(/^BenchmarkProcessHop\//, "", name); sub(/-[0-9]+$/, "", name)
			printf "hop %-6s %6.1f us of CPU per round trip to another process (%s)\n", name, v,
				name == "socket" ? "a byte each way on a unix socket pair" : "a small HTTP exchange through the Mux"
		}'
}

# bulk: 1 GiB up and down through bench/benchdist's sink and source, in its
# plugin against compiled in, with each process's RSS rise.
run_bulk() {
	local inproc plugin
	start bench-inproc
	inproc="$URL@$PID"
	start bench-plugin
	plugin="$URL@$PID"
	"$WORK/bulk" -size "${BULK_SIZE:-1073741824}" -rounds "${BULK_ROUNDS:-3}" -goal 0.8 \
		"inproc=$inproc" "plugin=$plugin"
}

sets=()
targets=()
if [[ $# -eq 0 ]]; then
	sets=("${SETS[@]}")
fi
for name in "$@"; do
	if [[ " ${SETS[*]} " == *" $name "* ]]; then
		sets+=("$name")
	elif declare -F "start_$name" >/dev/null && [[ " ${TARGETS[*]} " == *" $name "* ]]; then
		targets+=("$name")
	else
		echo "unknown target $name (sets: ${SETS[*]} parked reload cluster; hello targets: ${TARGETS[*]})" >&2
		exit 2
	fi
done
if [[ ${#targets[@]} -gt 0 ]]; then
	sets+=(hello)
fi

build
echo "go $(go env GOVERSION), $(nproc) CPUs, $(uname -sr)"
status=0
for set in "${sets[@]}"; do
	echo
	echo "== $set"
	rc=0
	if [[ $set == hello ]]; then
		run_hello "${targets[@]}" || rc=$?
	else
		"run_$set" || rc=$?
	fi
	status=$((rc > status ? rc : status))
done
exit "$status"
