package nft

import (
	"net/netip"
	"testing"
)

// TestDecodeConcat decodes elements as the kernel stores them, both
// address families included: a set of IPv6 addresses is an addition to
// the rules, not a new decoder.
func TestDecodeConcat(t *testing.T) {
	ifname := func(s string) []byte { b := make([]byte, 16); copy(b, s); return b }
	v6 := func(s string) []byte { a := netip.MustParseAddr(s).As16(); return a[:] }
	v4 := func(s string) []byte { a := netip.MustParseAddr(s).As4(); return a[:] }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tt := range []struct {
		typ      string
		key, end []byte
		interval bool
		want     string
	}{
		{"ipv4_addr", v4("192.168.100.10"), nil, false, "192.168.100.10"},
		{"ipv6_addr", v6("fd00:100::10"), nil, false, "fd00:100::10"},
		{"ifname . ipv6_addr", cat(ifname("web1-0"), v6("fd00:100::10")), nil, false, "web1-0 . fd00:100::10"},
		{"ipv6_addr", v6("fd00:100::"), v6("fd00:100::ffff:ffff:ffff:ffff"), true, "fd00:100::/64"},
		{"ipv6_addr", v6("2001:db8::"), v6("2001:db8:0:ff:ffff:ffff:ffff:ffff"), true, "2001:db8::/56"},
		{"ipv4_addr", v4("203.0.113.0"), v4("203.0.113.255"), true, "203.0.113.0/24"},
	} {
		got, err := decodeConcat(tt.typ, tt.key, tt.end, tt.interval)
		if err != nil || got != tt.want {
			t.Errorf("decodeConcat(%s) = %q, %v; want %q", tt.typ, got, err, tt.want)
		}
	}
}
