package rounds

import "testing"

func TestMedianAndRatio(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
	// Per-round pairing: round 2 ran on a slow machine for both targets.
	if got := Ratio([]float64{10, 2, 12}, []float64{20, 4, 20}); got != 0.5 {
		t.Errorf("Ratio = %v, want 0.5", got)
	}
}
