package scenario

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBenchScript runs bench/run.sh's hello, cpu and bulk sets once with the
// smallest knobs, so the benchmark the README shows keeps working: every
// target starts, every request succeeds, and every ratio and goal line is
// printed. The figures of so short a run mean nothing, so the script may
// exit 3 (a goal missed) but not 1 (a failed request) or 2 (a bad target).
func TestBenchScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the benchmark servers")
	}
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bounded*3)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "bench", "run.sh"))
	cmd.Dir = root
	cmd.Env = append(cmd.Environ(), "ROUNDS=1", "DURATION=100ms", "WARMUP=50ms", "CONNS=2",
		"BULK_SIZE=4194304", "BULK_ROUNDS=1", "HOP_TRIPS=200")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("bench/run.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		`(?m)^paster-http +\d+ +[\d.]+ +0 +0 +\(goal ≥ 0.95: (ok|BELOW)\)$`,
		`(?m)^paster-serve +\d+ +[\d.]+ +0 +0\b`,
		`(?m)^paster-plugin / reverse-proxy = [\d.]+  \(goal ≥ 2: (ok|BELOW)\)$`,
		`(?m)^paster-plugin / paster-http = [\d.]+  \(goal ≥ 0.5: (ok|BELOW)\)$`,
		`(?m)^cpu-plugin +\d+ +[\d.]+ +0 +0 +\(goal ≥ 0.9: (ok|BELOW)\)$`,
		`(?m)^hop socket +[\d.]+ us of CPU per round trip to another process \(a byte each way on a unix socket pair\)$`,
		`(?m)^hop http +[\d.]+ us of CPU per round trip to another process \(a small HTTP exchange through the Mux\)$`,
		`(?m)^plugin +upload +\d+ +[\d.]+  \(goal ≥ 0.8: (ok|BELOW)\)$`,
		`(?m)^plugin +download +\d+ +[\d.]+  \(goal ≥ 0.8: (ok|BELOW)\)$`,
		`(?m)^  plugin +paster-plugin-bench\[\d+\] +[\d.]+ MiB  (ok|ABOVE)$`,
	} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("bench/run.sh output lacks %s\n%s", want, out)
		}
	}
}
