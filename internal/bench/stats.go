package bench

import (
	"math"
	"slices"
)

// nan marks a measurement that failed or cannot be made.
var nan = math.NaN()

// Summary condenses the samples of one metric over the rounds of a bench.
// The median, not the mean, is the figure: one round disturbed by another
// process on the machine moves a mean but not a median.
type Summary struct {
	// N is the number of samples.
	N int `json:"n"`
	// Median of the samples (for an even N, the mean of the middle two).
	Median float64 `json:"median"`
	// Min and Max bound the samples.
	Min float64 `json:"min"`
	Max float64 `json:"max"`
}

// Summarize returns the summary of samples; NaN samples (a measurement that
// failed) are left out. With no samples left, N is 0 and the figures are
// NaN.
func Summarize(samples []float64) Summary {
	var s []float64
	for _, v := range samples {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Median: med, Min: s[0], Max: s[n-1]}
}

// Spread is the width of the min–max range relative to the median: 0.1
// means the rounds differ by 10% of the median. It is 0 for fewer than two
// samples and +Inf when the median is 0 but the samples differ.
func (s Summary) Spread() float64 {
	if s.N < 2 {
		return 0
	}
	w := s.Max - s.Min
	if w == 0 {
		return 0
	}
	if s.Median == 0 {
		return math.Inf(1)
	}
	return math.Abs(w / s.Median)
}

// Valid reports whether the summary holds at least one sample.
func (s Summary) Valid() bool { return s.N > 0 }

// Ratio compares two summaries: the ratio of their medians and the widest
// range the samples allow (a's smallest over b's largest up to a's largest
// over b's smallest).
type Ratio struct {
	// Value is median(a) / median(b).
	Value float64 `json:"value"`
	// Low and High bound the ratio over the samples' min–max ranges.
	Low  float64 `json:"low"`
	High float64 `json:"high"`
}

// RatioOf divides a by b. It returns ok=false when either has no samples or
// b's figures are not positive (a ratio to 0 says nothing).
func RatioOf(a, b Summary) (Ratio, bool) {
	if !a.Valid() || !b.Valid() || b.Median <= 0 || b.Min <= 0 || b.Max <= 0 {
		return Ratio{}, false
	}
	return Ratio{Value: a.Median / b.Median, Low: a.Min / b.Max, High: a.Max / b.Min}, true
}

// Percent is the ratio as a change in percent: 0.95 is -5%.
func (r Ratio) Percent() float64 { return (r.Value - 1) * 100 }

// Percentile returns the p-th percentile (0 < p <= 100) of samples by the
// nearest-rank method: the smallest sample that at least p% of the samples
// do not exceed. samples need not be sorted; it returns NaN for none.
func Percentile(samples []float64, p float64) float64 {
	if len(samples) == 0 {
		return math.NaN()
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(s) {
		rank = len(s)
	}
	return s[rank-1]
}
