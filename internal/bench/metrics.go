package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Metric keys of the network bench. Samples are kept in the units noted.
const (
	MetricTCP1      = "tcp1"      // TCP, 1 stream: received bits/s
	MetricTCP4      = "tcp4"      // TCP, 4 streams: received bits/s
	MetricUDP       = "udp"       // UDP at the fixed offered rate: received bits/s
	MetricUDPLoss   = "udpLoss"   // UDP loss, percent of the datagrams sent
	MetricUDPJitter = "udpJitter" // UDP jitter, ms (RFC 3550, as iperf3 computes it)
	MetricLatP50    = "latP50"    // UDP request/response round trip, median, µs
	MetricLatP99    = "latP99"    // the same, 99th percentile, µs
	MetricCPU       = "cpu"       // sys+softirq, percent of the machine, during the UDP run
	MetricCPUTCP    = "cpuTCP"    // sys+softirq, percent of the machine, during the TCP 1-stream run
	MetricCPUSend   = "iperfCPUSender"
	MetricCPURecv   = "iperfCPUReceiver"
)

// MetricInfo describes a metric for tables and charts.
type MetricInfo struct {
	// Key is the metric's key in samples and JSON.
	Key string
	// Title is the column heading.
	Title string
	// Unit is what a displayed value is in, after dividing by Scale.
	Unit  string
	Scale float64
	// Digits after the decimal point when displayed.
	Digits int
	// Higher is true when a larger value is better (throughput).
	Higher bool
}

// Metrics lists the network bench's metrics in table order.
var Metrics = []MetricInfo{
	{Key: MetricTCP1, Title: "TCP 1 stream", Unit: "Gbit/s", Scale: 1e9, Digits: 2, Higher: true},
	{Key: MetricTCP4, Title: "TCP 4 streams", Unit: "Gbit/s", Scale: 1e9, Digits: 2, Higher: true},
	{Key: MetricUDP, Title: "UDP received", Unit: "Mbit/s", Scale: 1e6, Digits: 0, Higher: true},
	{Key: MetricUDPLoss, Title: "UDP loss", Unit: "%", Scale: 1, Digits: 2},
	{Key: MetricUDPJitter, Title: "UDP jitter", Unit: "ms", Scale: 1, Digits: 3},
	{Key: MetricLatP50, Title: "latency p50", Unit: "µs", Scale: 1, Digits: 1},
	{Key: MetricLatP99, Title: "latency p99", Unit: "µs", Scale: 1, Digits: 1},
	{Key: MetricCPU, Title: "CPU sys+softirq (UDP)", Unit: "%", Scale: 1, Digits: 1},
	{Key: MetricCPUTCP, Title: "CPU sys+softirq (TCP 1)", Unit: "%", Scale: 1, Digits: 1},
	{Key: MetricCPUSend, Title: "iperf3 CPU sender (TCP 1)", Unit: "% of a CPU", Scale: 1, Digits: 0},
	{Key: MetricCPURecv, Title: "iperf3 CPU receiver (TCP 1)", Unit: "% of a CPU", Scale: 1, Digits: 0},
}

// Metric returns the description of key.
func Metric(key string) (MetricInfo, bool) {
	for _, m := range Metrics {
		if m.Key == key {
			return m, true
		}
	}
	return MetricInfo{}, false
}

// Format renders v (in the metric's sample units) in display units.
func (m MetricInfo) Format(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v/m.Scale, 'f', m.Digits, 64)
}

// FormatSummary renders a summary as "median (min–max)", or just the
// median for one sample, or "-" for none.
func (m MetricInfo) FormatSummary(s Summary) string {
	switch {
	case !s.Valid():
		return "-"
	case s.N == 1 || s.Min == s.Max:
		return m.Format(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", m.Format(s.Median), m.Format(s.Min), m.Format(s.Max))
}

// summaryJSON is Summary on the wire. A summary without samples has NaN
// figures, which JSON cannot carry: it is written as {"n": 0}.
type summaryJSON struct {
	N      int      `json:"n"`
	Median *float64 `json:"median,omitempty"`
	Min    *float64 `json:"min,omitempty"`
	Max    *float64 `json:"max,omitempty"`
}

// MarshalJSON writes a summary without samples as {"n":0}.
func (s Summary) MarshalJSON() ([]byte, error) {
	if !s.Valid() {
		return json.Marshal(summaryJSON{})
	}
	return json.Marshal(summaryJSON{N: s.N, Median: &s.Median, Min: &s.Min, Max: &s.Max})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var j summaryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if j.N == 0 || j.Median == nil || j.Min == nil || j.Max == nil {
		*s = Summary{Median: nan, Min: nan, Max: nan}
		return nil
	}
	*s = Summary{N: j.N, Median: *j.Median, Min: *j.Min, Max: *j.Max}
	return nil
}
