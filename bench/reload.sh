#!/usr/bin/env bash
# bench/reload.sh (also: bench/run.sh reload): paster serve under continuous
# load while its INI file is rewritten and reloaded many times, cycling
# through an app setting, a rebuilt plugin binary, a startup coroutine added
# or removed, and a server-section change on the same address. Prints
# requests sent, non-2xx and socket errors (must be 0: exit 1 otherwise),
# reloads ok/failed, latency percentiles and the longest pause.
#
# Then, to tell which change costs what, 12 reloads of each kind alone
# (SIGHUP) with their longest pause, and a run with no reload as the
# baseline pause of the machine.
#
# Knobs (environment): RELOADS (40 per trigger), CONNS (8), TRIGGERS
# ("hup watch": SIGHUP, and --reload's file watcher), BYKIND (1; 0 skips
# the per-kind runs).
set -euo pipefail
cd "$(dirname "$0")/.."

RELOADS=${RELOADS:-40}
CONNS=${CONNS:-8}
TRIGGERS=${TRIGGERS:-hup watch}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "building into $WORK ..." >&2
go build -o "$WORK/paster" ./cmd/paster
go build -o "$WORK/plugins/" ./examples/hello/cmd/paster-plugin-hello
go build -o "$WORK/reload" ./bench/cmd/reload
echo "go $(go env GOVERSION), $(nproc) CPUs, $(uname -sr)"
status=0
for trigger in $TRIGGERS; do
	mkdir -p "$WORK/$trigger"
	"$WORK/reload" -paster "$WORK/paster" -plugin "$WORK/plugins/paster-plugin-hello" \
		-dir "$WORK/$trigger" -n "$RELOADS" -c "$CONNS" -trigger "$trigger" || {
		status=1
		echo "--- paster log ($trigger):" >&2
		tail -50 "$WORK/$trigger/reload.log" >&2 || true
	}
done
if [[ ${BYKIND:-1} == 1 ]]; then
	echo "longest pause by kind of change (12 reloads each, SIGHUP; none = no reload):"
	for kind in none setting binary coroutine server; do
		n=12
		k=$kind
		if [[ $kind == none ]]; then n=0; k=setting; fi
		mkdir -p "$WORK/kind-$kind"
		line=$("$WORK/reload" -paster "$WORK/paster" -plugin "$WORK/plugins/paster-plugin-hello" \
			-dir "$WORK/kind-$kind" -n "$n" -c "$CONNS" -trigger hup -kinds "$k" | grep -E "longest pause|socket errors|non-2xx" | tr -s ' ' | tr '\n' ' ') || status=1
		printf "  %-10s %s\n" "$kind" "$line"
	done
fi
exit $status
