package plugins

import (
	"fmt"
	"testing"
	"time"
)

// TestCrashLoopPolicy: what follows each crash — a backoff doubling per
// crash within a minute up to 10 s, past the limit the cooldown or, without
// one, failed; restarts off fail at once; crashes older than a minute no
// longer count.
func TestCrashLoopPolicy(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	type step struct {
		after time.Duration // since t0
		want  string        // state and delay
	}
	tests := []struct {
		name  string
		loop  crashLoop
		steps []step
	}{
		{"backoff then cooldown", crashLoop{backoff: 100 * time.Millisecond, maxRestarts: 3, cooldown: 30 * time.Second}, []step{
			{0, "restarting 100ms"}, {time.Second, "restarting 200ms"}, {2 * time.Second, "restarting 400ms"},
			{3 * time.Second, "crash_loop 30s"}, {4 * time.Second, "crash_loop 30s"},
		}},
		{"backoff capped at 10s", crashLoop{backoff: 4 * time.Second, maxRestarts: 5}, []step{
			{0, "restarting 4s"}, {time.Second, "restarting 8s"}, {2 * time.Second, "restarting 10s"},
		}},
		{"no cooldown: failed past the limit", crashLoop{backoff: time.Second, maxRestarts: 1}, []step{
			{0, "restarting 1s"}, {time.Second, "failed 0s"},
		}},
		{"restarts off", crashLoop{backoff: time.Second, maxRestarts: -1, cooldown: time.Second}, []step{
			{0, "failed 0s"},
		}},
		{"a minute forgets", crashLoop{backoff: time.Second, maxRestarts: 1, cooldown: 5 * time.Second}, []step{
			{0, "restarting 1s"}, {time.Second, "crash_loop 5s"}, {2 * time.Minute, "restarting 1s"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := tt.loop
			for i, s := range tt.steps {
				st, d := c.crash(t0.Add(s.after))
				if got := fmt.Sprintf("%s %s", st, d); got != s.want {
					t.Errorf("crash %d: %s, want %s", i+1, got, s.want)
				}
			}
		})
	}
}
