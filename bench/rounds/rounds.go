// Package rounds summarises benchmark rounds the way bench/run.sh reports
// them: a target measured once per round, alternating with its baseline, is
// compared with it by the median of the per-round ratios, which pairs
// measurements taken close in time on a noisy machine.
package rounds

import "sort"

// Median returns the median of xs, or 0 for none.
func Median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Ratio returns the median of a[i]/b[i] over the rounds both measured.
func Ratio(a, b []float64) float64 {
	n := min(len(a), len(b))
	ratios := make([]float64, n)
	for i := range n {
		ratios[i] = a[i] / b[i]
	}
	return Median(ratios)
}
