package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Syntax of single values: names, interface names, MACs, ports, rates.

// maxNameLen is the longest network or VM name: IFNAMSIZ-1, as names end
// up in device names.
const maxNameLen = 15

// ifNameSize is the kernel's IFNAMSIZ: device names have at most
// ifNameSize-1 bytes.
const ifNameSize = 16

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// nameRule says what a network or VM name may be, for messages.
const nameRule = "want 1 to 15 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. web1"

func validName(s string) bool { return len(s) <= maxNameLen && nameRE.MatchString(s) }

// ifNameProblem says what is wrong with a network device name, or "" when
// it is valid: the kernel's rules (dev_valid_name in net/core/dev.c), and
// ASCII only.
func ifNameProblem(s string) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) >= ifNameSize:
		return fmt.Sprintf("is %d characters long, Linux allows at most %d", len(s), ifNameSize-1)
	case s == "." || s == "..":
		return "is not allowed as a device name"
	case strings.ContainsAny(s, "/:"):
		return "contains '/' or ':', which Linux does not allow in device names"
	case strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return "contains whitespace or a control character, which Linux does not allow in device names"
	case strings.IndexFunc(s, func(r rune) bool { return r > 0x7f }) >= 0:
		// Linux would take it, but nft, tc and udev rules are a poor
		// place to meet bytes beyond ASCII.
		return "contains a character beyond ASCII; kvmnet takes device names of ASCII letters, digits and punctuation"
	}
	return ""
}

// parseMAC parses a 6-byte MAC address into its lowercase colon form.
func parseMAC(s string) (net.HardwareAddr, bool) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return nil, false
	}
	return hw, true
}

// parsePort parses one port number, 1..65535.
func parsePort(s string) (uint16, string) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 32)
	switch {
	case err != nil && isDigits(s):
		return 0, fmt.Sprintf("port %s is out of range (want 1 to 65535)", s)
	case err != nil:
		return 0, fmt.Sprintf("%q is not a port number (want 1 to 65535)", s)
	case n < 1 || n > math.MaxUint16:
		return 0, fmt.Sprintf("port %d is out of range (want 1 to 65535)", n)
	}
	return uint16(n), ""
}

// parsePortRange parses "8080" or "5000-5010".
func parsePortRange(s string) (first, last uint16, problem string) {
	a, b, isRange := strings.Cut(s, "-")
	if first, problem = parsePort(a); problem != "" {
		return 0, 0, problem
	}
	if !isRange {
		return first, first, ""
	}
	if last, problem = parsePort(b); problem != "" {
		return 0, 0, problem
	}
	if first > last {
		return 0, 0, fmt.Sprintf("the range starts after it ends (did you mean %d-%d?)", last, first)
	}
	return first, last, ""
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// rateUnits are tc's rate units, in bits per second.
var rateUnits = map[string]float64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
	"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
}

// rateRule lists the rate syntax, for messages.
const rateRule = "want a number and a unit as tc writes rates, e.g. 100mbit or 1gbit; units: bit, kbit, mbit, gbit, tbit (bits per second), bps, kbps, mbps, gbps, tbps (bytes per second)"

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]+)$`)

// ParseRate parses a rate in tc syntax ("100mbit", "1.5gbit", "10mbps": a
// number and one of bit, kbit, mbit, gbit, tbit, bps, kbps, mbps, gbps,
// tbps, in any case) and returns it in bits per second. As in tc, k/m/g/t
// are powers of 1000 and "bps" means bytes per second.
func ParseRate(s string) (uint64, error) {
	m := rateRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a rate (%s)", s, rateRule)
	}
	unit, ok := rateUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q (%s)", s, m[2], rateRule)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	bits := n * unit
	if err != nil || bits < 1 || bits >= math.MaxUint64 {
		return 0, fmt.Errorf("%q is out of range (want at least 1bit, e.g. 100mbit)", s)
	}
	return uint64(bits), nil
}

var rateLimitRE = regexp.MustCompile(`^([0-9]+)/([a-z]+)$`)

// ParseRateLimit parses a limit such as "100/second" or "600/minute" (a
// positive whole number, '/', and second or minute).
func ParseRateLimit(s string) (count uint64, per time.Duration, err error) {
	m := rateLimitRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, fmt.Errorf("%q is not a rate limit (want COUNT/second or COUNT/minute, e.g. 100/second)", s)
	}
	switch m[2] {
	case "second":
		per = time.Second
	case "minute":
		per = time.Minute
	default:
		return 0, 0, fmt.Errorf("%q has the unit %q (want second or minute, e.g. 100/second)", s, m[2])
	}
	count, err = strconv.ParseUint(m[1], 10, 32)
	if err != nil || count == 0 {
		return 0, 0, fmt.Errorf("%q: the count must be a whole number from 1 to 4294967295 (e.g. 100/second)", s)
	}
	return count, per, nil
}

// domainLabelRE is one DNS label (RFC 1123).
var domainLabelRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// domainProblem says what is wrong with a DNS domain, or "".
func domainProblem(s string) string {
	if len(s) > 253 {
		return "is longer than 253 characters"
	}
	if strings.HasSuffix(s, ".") {
		return "ends with a dot; write it without (e.g. dev.kvm)"
	}
	for _, l := range strings.Split(s, ".") {
		if !domainLabelRE.MatchString(l) {
			return "is not a DNS domain (want labels of letters, digits and '-' separated by dots, e.g. dev.kvm)"
		}
	}
	return ""
}

// ownerRE is a user name or a uid.
var ownerRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}\$?$`)

// IPv4 arithmetic on prefixes.

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrFrom(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// broadcast returns the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	return addrFrom(u32(p.Masked().Addr()) | (1<<(32-p.Bits()) - 1))
}

// overlaps reports whether two IPv4 ranges [a1,a2] and [b1,b2] share an
// address.
func overlaps(a1, a2, b1, b2 uint32) bool { return a1 <= b2 && b1 <= a2 }

// shortDuration writes d without zero units: 1h, 1h30m, 90s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
