package model

import (
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// Conntrack is host: conntrack:, the size of the kernel's
// connection-tracking table and its timeouts:
//
//	host:
//	  conntrack:
//	    max: auto              # or a number of entries
//	    buckets: auto          # or a number of hash buckets
//	    timeouts: {tcpEstablished: 2h5m, udp: 30s, udpStream: 2m}
//
// Each setting is a sysctl under net.netfilter (see plan.ConntrackSysctl);
// kvmnet keeps the value it found first and puts it back when the setting
// leaves the file, as for every sysctl it changes. What `auto` comes to is
// decided by the planner, which knows the host's memory.
type Conntrack struct {
	// Max is nf_conntrack_max, the number of entries the table holds.
	Max CtSize `yaml:"max"`
	// Buckets is nf_conntrack_buckets, the size of its hash table.
	Buckets CtSize `yaml:"buckets"`
	// Timeouts are by key of ConntrackTimeoutKeys. With a conntrack:
	// section, tcpEstablished defaults to DefaultTCPEstablished.
	Timeouts map[string]Duration `yaml:"timeouts"`
}

// CtSize is `auto` or a number; the zero value is "not set".
type CtSize struct {
	Auto bool
	N    int
}

// Set reports whether the size was written.
func (s CtSize) Set() bool { return s.Auto || s.N > 0 }

// String is the size as written in a file.
func (s CtSize) String() string {
	if s.Auto {
		return "auto"
	}
	return strconv.Itoa(s.N)
}

// ConntrackTimeoutKeys are the keys of conntrack: timeouts:, in the order
// messages list them; each is one nf_conntrack_*_timeout* sysctl.
var ConntrackTimeoutKeys = []string{
	"tcpEstablished", "tcpSynSent", "tcpSynRecv", "tcpFinWait", "tcpCloseWait", "tcpLastAck",
	"tcpTimeWait", "tcpClose", "tcpMaxRetrans", "tcpUnacknowledged",
	"udp", "udpStream", "icmp", "icmpv6", "generic",
}

// DefaultTCPEstablished is the established-TCP timeout a conntrack:
// section sets unless it says otherwise. The kernel keeps an idle
// established connection for 5 days, so a NAT guest that vanished (shut
// down, suspended, its peer gone) holds its entries for days. RFC 5382
// (REQ-5) asks a NAT not to drop an idle established connection before 2
// hours 4 minutes: the 2-hour TCP keepalive plus 4 minutes for the probe.
// 2h5m is the shortest timeout that honours it.
const DefaultTCPEstablished = 2*time.Hour + 5*time.Minute

// Limits of the conntrack settings, with the kernel's reasons.
const (
	// CtMaxMin and CtMaxMax bound max: fewer than 256 entries cannot
	// carry a host's own connections; the kernel reads an int.
	CtMaxMin = 256
	CtMaxMax = 1<<31 - 1
	// CtBucketsMin and CtBucketsMax bound buckets: the kernel's own floor,
	// and 2^24 buckets (128 MiB of hash heads).
	CtBucketsMin = 1024
	CtBucketsMax = 1 << 24
	// ctTimeoutMax: the kernel stores timeouts in jiffies in an int (24.8
	// days at HZ=1000); 20 days leaves room.
	ctTimeoutMax = 480 * time.Hour
)

// conntrackKeys are the keys of host: conntrack:.
var conntrackKeys = []string{"max", "buckets", "timeouts"}

// conntrack reads host: conntrack:.
func (d *decoder) conntrack(path string, n ast.Node) *Conntrack {
	c := &Conntrack{}
	d.mapping(path, n, "in conntrack", " like {max: auto, timeouts: {tcpEstablished: 2h5m}}", conntrackKeys, func(key, p string, v ast.Node) {
		switch key {
		case "max":
			c.Max = d.ctSize(p, v, "524288")
		case "buckets":
			c.Buckets = d.ctSize(p, v, "131072")
		case "timeouts":
			c.Timeouts = map[string]Duration{}
			d.mapping(p, v, "in conntrack timeouts", " like {tcpEstablished: 2h5m, udp: 30s}", ConntrackTimeoutKeys, func(key, p string, v ast.Node) {
				c.Timeouts[key] = d.duration(p, v)
			})
		}
	})
	return c
}

// ctSize reads auto or a whole number.
func (d *decoder) ctSize(path string, n ast.Node, example string) CtSize {
	s, ok := d.scalar(path, n)
	switch {
	case !ok:
		return CtSize{}
	case s == "auto":
		return CtSize{Auto: true}
	}
	return CtSize{N: d.integer(path, n, "auto or "+example)}
}

// conntrack checks host: conntrack: and fills in its default.
func (k *checker) conntrack() {
	c := k.c.Host.Conntrack
	if c == nil {
		return
	}
	const p = "host.conntrack"
	if k.pos.has(p+".max") && !c.Max.Auto && (c.Max.N < CtMaxMin || c.Max.N > CtMaxMax) {
		k.errorf(p+".max", "%s entries is out of range (want auto, or %d to %d)", k.pos.text(p+".max", c.Max.String()), CtMaxMin, CtMaxMax)
	}
	if k.pos.has(p+".buckets") && !c.Buckets.Auto && (c.Buckets.N < CtBucketsMin || c.Buckets.N > CtBucketsMax) {
		k.errorf(p+".buckets", "%s buckets is out of range (want auto, or %d to %d)", k.pos.text(p+".buckets", c.Buckets.String()), CtBucketsMin, CtBucketsMax)
	}
	for _, key := range ConntrackTimeoutKeys {
		t, ok := c.Timeouts[key]
		tp := p + ".timeouts." + key
		if !ok {
			continue
		}
		switch {
		case t.Duration < time.Second || t.Duration > ctTimeoutMax:
			k.errorf(tp, "%q is out of range (want 1s to %s)", k.pos.text(tp, t.String()), shortDuration(ctTimeoutMax))
		case t.Duration%time.Second != 0:
			k.errorf(tp, "%q is not a whole number of seconds (the kernel counts timeouts in seconds; want e.g. 30s, 2m, 2h5m)", k.pos.text(tp, t.String()))
		}
	}
	if _, ok := c.Timeouts["tcpEstablished"]; !ok {
		if c.Timeouts == nil {
			c.Timeouts = map[string]Duration{}
		}
		c.Timeouts["tcpEstablished"] = Duration{DefaultTCPEstablished}
	}
}

// conntrack writes host: conntrack:.
func (w *writer) conntrack(c *Conntrack) {
	w.line(2, "conntrack:")
	if c.Max.Set() {
		w.line(4, "max: "+c.Max.String())
	}
	if c.Buckets.Set() {
		w.line(4, "buckets: "+c.Buckets.String())
	}
	var t []string
	for _, key := range ConntrackTimeoutKeys {
		if v, ok := c.Timeouts[key]; ok {
			t = append(t, key+": "+v.String())
		}
	}
	// check always gives tcpEstablished a value, so the section is
	// never empty.
	if len(t) > 0 {
		w.line(4, "timeouts: {"+strings.Join(t, ", ")+"}")
	}
}
