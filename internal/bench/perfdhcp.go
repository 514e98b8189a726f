package bench

import (
	"bufio"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Exchange is perfdhcp's account of one half of the DHCPv4 four-way
// exchange: DISCOVER→OFFER or REQUEST→ACK.
type Exchange struct {
	Sent     int `json:"sent"`
	Received int `json:"received"`
	// Drops are requests that got no answer within perfdhcp's drop time
	// (1 s by default), counted at the end of the run.
	Drops    int `json:"drops"`
	Orphans  int `json:"orphans"`
	Rejected int `json:"rejectedLeases"`
	// Delays in milliseconds, as perfdhcp reports them.
	MinMs float64 `json:"minMs"`
	AvgMs float64 `json:"avgMs"`
	MaxMs float64 `json:"maxMs"`
	// P50Ms and P99Ms are computed from the per-packet timestamps that
	// `perfdhcp -x t` prints; 0 when it printed none.
	P50Ms float64 `json:"p50Ms,omitempty"`
	P99Ms float64 `json:"p99Ms,omitempty"`
}

// PerfDHCP is the result of one perfdhcp run.
type PerfDHCP struct {
	// Rate is the offered rate (-r), in four-way exchanges per second.
	Rate int `json:"rate"`
	// Seconds is the test period (-p).
	Seconds int `json:"seconds"`
	// ExchangesPerSec is the four-way exchanges completed (ACKs received)
	// per second of the test period. perfdhcp's own "Rate:" line divides
	// by the run's whole length, its final wait (-W) included.
	ExchangesPerSec float64  `json:"exchangesPerSec"`
	Discover        Exchange `json:"discoverOffer"`
	Request         Exchange `json:"requestAck"`
}

// Drops is the number of unanswered DISCOVERs and REQUESTs.
func (p PerfDHCP) Drops() int { return p.Discover.Drops + p.Request.Drops }

// Clean reports a run with answers and without a single drop.
func (p PerfDHCP) Clean() bool { return p.Drops() == 0 && p.Request.Received > 0 }

// P99Ms is the higher of the two exchanges' p99.
func (p PerfDHCP) P99Ms() float64 { return max(p.Discover.P99Ms, p.Request.P99Ms) }

// Within1pct reports a run with answers, fewer than 1% of its DISCOVERs
// and REQUESTs dropped and a p99 under 20 ms: the measure for new
// clients.
func (p PerfDHCP) Within1pct() bool {
	sent := p.Discover.Sent + p.Request.Sent
	return p.Request.Received > 0 && sent > 0 && p.Drops()*100 < sent && p.P99Ms() > 0 && p.P99Ms() < 20
}

// ParsePerfDHCP reads the output of `perfdhcp -4 ... [-x t]` (Kea 2.2's
// format): the "Statistics for" sections of DISCOVER-OFFER and
// REQUEST-ACK, and, with -x t, their "Timestamps for packets" sections.
func ParsePerfDHCP(text string) (PerfDHCP, error) {
	var p PerfDHCP
	var cur *Exchange
	var stamps *[]float64
	var do, ra []float64
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "***Statistics for: DISCOVER-OFFER***":
			cur, stamps = &p.Discover, nil
			seen["do"] = true
			continue
		case line == "***Statistics for: REQUEST-ACK***":
			cur, stamps = &p.Request, nil
			seen["ra"] = true
			continue
		case line == "***Timestamps for packets: DISCOVER-OFFER***":
			cur, stamps = nil, &do
			continue
		case line == "***Timestamps for packets: REQUEST-ACK***":
			cur, stamps = nil, &ra
			continue
		case strings.HasPrefix(line, "***"):
			cur, stamps = nil, nil
			continue
		}
		if stamps != nil {
			// sent / received: 000000.040181 / 000000.040427
			v, ok := strings.CutPrefix(line, "sent / received:")
			if !ok {
				continue
			}
			sent, recv, ok := strings.Cut(v, "/")
			if !ok {
				return PerfDHCP{}, fmt.Errorf("reading perfdhcp timestamps: %q", line)
			}
			s, err1 := strconv.ParseFloat(strings.TrimSpace(sent), 64)
			r, err2 := strconv.ParseFloat(strings.TrimSpace(recv), 64)
			if err1 != nil || err2 != nil {
				return PerfDHCP{}, fmt.Errorf("reading perfdhcp timestamps: %q", line)
			}
			*stamps = append(*stamps, (r-s)*1e3)
			continue
		}
		if cur == nil {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "ms"))
		num := func() float64 {
			// perfdhcp prints "inf" and "nan" for delays of an exchange
			// that never completed: no figure.
			f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return 0
			}
			return f
		}
		switch key {
		case "sent packets":
			cur.Sent = int(num())
		case "received packets":
			cur.Received = int(num())
		case "drops":
			cur.Drops = int(num())
		case "orphans":
			cur.Orphans = int(num())
		case "rejected leases":
			cur.Rejected = int(num())
		case "min delay":
			cur.MinMs = num()
		case "avg delay":
			cur.AvgMs = num()
		case "max delay":
			cur.MaxMs = num()
		}
	}
	if err := sc.Err(); err != nil {
		return PerfDHCP{}, fmt.Errorf("reading perfdhcp output: %w", err)
	}
	if !seen["do"] || !seen["ra"] {
		return PerfDHCP{}, fmt.Errorf("reading perfdhcp output: no DISCOVER-OFFER and REQUEST-ACK statistics (output starts %q)", head([]byte(text), 120))
	}
	if len(do) > 0 {
		p.Discover.P50Ms, p.Discover.P99Ms = Percentile(do, 50), Percentile(do, 99)
	}
	if len(ra) > 0 {
		p.Request.P50Ms, p.Request.P99Ms = Percentile(ra, 50), Percentile(ra, 99)
	}
	return p, nil
}
