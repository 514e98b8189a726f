package model

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Shape modes (Shape.Mode).
const (
	ModeShape  = "shape"
	ModePolice = "police"
)

// sizeRule lists the size syntax, for messages.
const sizeRule = "want a number and a unit as tc writes sizes, e.g. 256kb or 1mb; units: b, kb, mb, gb (bytes, powers of 1024)"

var sizeRE = regexp.MustCompile(`^([0-9]+)([a-zA-Z]*)$`)

var sizeUnits = map[string]uint64{"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}

// ParseSize parses a size in tc syntax ("1600", "256kb", "1mb": a whole
// number and one of b, kb, mb, gb, in any case; k/m/g are powers of
// 1024 as in tc) and returns it in bytes.
func ParseSize(s string) (uint64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (%s)", s, sizeRule)
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q (%s)", s, m[2], sizeRule)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || n == 0 || n > math.MaxUint32/unit {
		return 0, fmt.Errorf("%q is out of range (want 1b to 4gb, e.g. 256kb)", s)
	}
	return n * unit, nil
}

// DefaultBurst is the burst of a shape that sets none: 10 ms at ceil,
// and at least two full frames. tc's own default (one timer tick at the
// rate plus an MTU) is too small for htb to reach rates above a few
// hundred mbit: the class waits for the timer between bursts.
func DefaultBurst(ceil uint64) uint64 {
	return max(ceil/8/100, 2*1514)
}

// Limits are a Shape's values parsed: rates in bits per second, burst in
// bytes (DefaultBurst when the file sets none).
type Limits struct {
	Rate, Ceil, Burst uint64
}

// Limits parses s, which Validate has checked; the zero Limits for a
// zero Shape.
func (s Shape) Limits() Limits {
	if s.Rate == "" {
		return Limits{}
	}
	var l Limits
	l.Rate, _ = ParseRate(s.Rate)
	l.Ceil = l.Rate
	if s.Ceil != "" {
		l.Ceil, _ = ParseRate(s.Ceil)
	}
	l.Burst = DefaultBurst(l.Ceil)
	if s.Burst != "" {
		l.Burst, _ = ParseSize(s.Burst)
	}
	return l
}

// shape writes one direction of qos back: a rate alone when that is all
// it has.
func (w *writer) shape(indent int, key string, s Shape) {
	if s.IsZero() {
		return
	}
	if s.rateOnly() {
		w.kv(indent, key, s.Rate)
		return
	}
	w.line(indent, key+":")
	w.kv(indent+2, "rate", s.Rate)
	w.kv(indent+2, "ceil", s.Ceil)
	w.kv(indent+2, "burst", s.Burst)
	w.kv(indent+2, "mode", s.Mode)
}

// ifaceQoS checks the qos keys of the interface at p.
func (k *checker) ifaceQoS(p string, q QoS) {
	for _, d := range []struct {
		key string
		s   Shape
	}{{"egress", q.Egress}, {"ingress", q.Ingress}} {
		dp := p + ".qos." + d.key
		if d.s.IsZero() && !k.pos.has(dp) {
			continue
		}
		k.shape(dp, d.key, d.s)
	}
}

// shape checks one direction at path dp.
func (k *checker) shape(dp, dir string, s Shape) {
	// A rate alone is at dp itself; a mapping has it at dp.rate.
	ratePath := dp + ".rate"
	if !k.pos.has(ratePath) {
		ratePath = dp
	}
	var rate uint64
	var err error
	if s.Rate == "" && !s.rateOnly() {
		k.errorf(dp, "qos %s has no rate; add one, e.g. {rate: 100mbit}", dir)
	} else if rate, err = ParseRate(s.Rate); err != nil {
		k.errorf(ratePath, "%v", err)
	}
	if s.Ceil != "" || k.pos.has(dp+".ceil") {
		ceil, err := ParseRate(s.Ceil)
		if err != nil {
			k.errorf(dp+".ceil", "%v", err)
		} else if rate != 0 && ceil < rate {
			k.errorf(dp+".ceil", "ceil %q is below rate %q (ceil is what the port may borrow up to, at least its rate); raise ceil or remove it", s.Ceil, s.Rate)
		}
	}
	if s.Burst != "" || k.pos.has(dp+".burst") {
		if _, err := ParseSize(s.Burst); err != nil {
			k.errorf(dp+".burst", "%v", err)
		}
	}
	switch s.Mode {
	case "", ModeShape:
	case ModePolice:
		if dir != "egress" {
			k.errorf(dp+".mode", "mode police is only for egress (traffic to the guest is shaped on its tap); remove mode")
		}
	default:
		k.errorf(dp+".mode", "%q is not a qos mode (want shape or police)", s.Mode)
	}
}
