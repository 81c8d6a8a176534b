#!/usr/bin/env bash
# bench/reload.sh (also: bench/run.sh reload): paster serve under continuous
# load while its INI file is rewritten and reloaded many times, cycling
# through an app setting, a rebuilt plugin binary, a startup coroutine added
# or removed, and a server-section change on the same address. Prints
# requests sent, non-2xx and socket errors (must be 0: exit 1 otherwise),
# reloads ok/failed, latency percentiles and the longest pause.
#
# Knobs (environment): RELOADS (40 per trigger), CONNS (8), TRIGGERS
# ("hup watch": SIGHUP, and --reload's file watcher).
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
exit $status
