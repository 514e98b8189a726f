package hostdhcp

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestTimers(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name             string
		length, o58, o59 time.Duration
		t1, t2           time.Duration
	}{
		{"defaults: half and seven eighths", 3600 * s, 0, 0, 1800 * s, 3150 * s},
		{"options used", 3600 * s, 600 * s, 1200 * s, 600 * s, 1200 * s},
		{"dnsmasq's two minutes", 120 * s, 60 * s, 105 * s, 60 * s, 105 * s},
		{"T2 past the lease: default T2", 3600 * s, 600 * s, 7200 * s, 600 * s, 3150 * s},
		{"T2 equal to the lease: default T2", 3600 * s, 0, 3600 * s, 1800 * s, 3150 * s},
		{"T1 past T2: default T1", 3600 * s, 2000 * s, 1000 * s, 1000 * s, 1000 * s},
		{"T1 only", 3600 * s, 100 * s, 0, 100 * s, 3150 * s},
		{"T2 only, before half the lease", 3600 * s, 0, 900 * s, 900 * s, 900 * s},
		{"T1 of zero is absent", 3600 * s, 0, 0, 1800 * s, 3150 * s},
		{"tiny lease: T1 at least a second", s, 0, 0, s, s},
		{"zero lease", 0, 0, 0, 0, 0},
		{"infinite", infiniteLease, 600 * s, 1200 * s, infiniteLease, infiniteLease},
	} {
		t1, t2 := timers(tc.length, tc.o58, tc.o59)
		if t1 != tc.t1 || t2 != tc.t2 {
			t.Errorf("%s: timers(%s, %s, %s) = %s, %s; want %s, %s", tc.name, tc.length, tc.o58, tc.o59, t1, t2, tc.t1, tc.t2)
		}
	}
}

func TestRetryAt(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		left, want time.Duration // from now
	}{
		{time.Hour, 30 * time.Minute},    // half the time left
		{100 * time.Second, time.Minute}, // at least 60 s
		{30 * time.Second, 30 * time.Second},
		{0, 0},
	} {
		if got := retryAt(now, now.Add(tc.left)).Sub(now); got != tc.want {
			t.Errorf("retryAt with %s left: in %s, want %s", tc.left, got, tc.want)
		}
	}
}

func TestRetransmit(t *testing.T) {
	var got []time.Duration
	for try := range 7 {
		got = append(got, retransmit(try, 0))
	}
	want := []time.Duration{4, 8, 16, 32, 64, 64, 64}
	for i := range want {
		want[i] *= time.Second
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("retransmit schedule (-want +got):\n%s", diff)
	}
	if d := retransmit(0, -time.Second); d != 3*time.Second {
		t.Errorf("retransmit(0, -1s) = %s, want 3s", d)
	}
}

func TestLifetime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &lease{start: start, length: 120 * time.Second}
	for _, tc := range []struct {
		at, want time.Duration
	}{
		{0, 120 * time.Second},
		{1500 * time.Millisecond, 118 * time.Second}, // rounded down
		{119 * time.Second, time.Second},
		{200 * time.Second, time.Second}, // never 0, which means forever
	} {
		if got := l.lifetime(start.Add(tc.at)); got != tc.want {
			t.Errorf("lifetime %s into a 120 s lease = %s, want %s", tc.at, got, tc.want)
		}
	}
	inf := &lease{start: start, length: infiniteLease}
	if got := inf.lifetime(start.Add(time.Hour)); got != 0 {
		t.Errorf("lifetime of an infinite lease = %s, want 0 (forever)", got)
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.20/24": "192.168.1.255",
		"10.1.2.3/8":      "10.255.255.255",
		"172.16.5.9/20":   "172.16.15.255",
		"10.0.0.1/30":     "10.0.0.3",
		"10.0.0.1/31":     "invalid IP",
		"10.0.0.1/32":     "invalid IP",
	} {
		if got := broadcast(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

// ack builds a DHCPACK for yiaddr with the given options.
func ack(t *testing.T, yiaddr string, opts ...dhcpv4.Option) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.ParseIP(yiaddr)),
	}
	for _, o := range opts {
		mods = append(mods, dhcpv4.WithOption(o))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseACK(t *testing.T) {
	sent := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	srv := dhcpv4.OptServerIdentifier(net.ParseIP("192.168.1.1"))
	lt := dhcpv4.OptIPAddressLeaseTime(time.Hour)
	mask := dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))
	type got struct {
		Addr, Brd, Server, Router string
		Length, T1, T2            time.Duration
	}
	show := func(l *lease) got {
		return got{l.addr.String(), l.brd.String(), l.server.String(), l.router.String(), l.length, l.t1, l.t2}
	}
	for _, tc := range []struct {
		name string
		ack  *dhcpv4.DHCPv4
		prev *lease
		want got
		err  string
	}{{
		name: "full",
		ack: ack(t, "192.168.1.20", srv, lt, mask,
			dhcpv4.OptRouter(net.ParseIP("192.168.1.254")),
			dhcpv4.OptRenewTimeValue(10*time.Minute)),
		want: got{"192.168.1.20/24", "192.168.1.255", "192.168.1.1", "192.168.1.254", time.Hour, 10 * time.Minute, 3150 * time.Second},
	}, {
		name: "broadcast option wins",
		ack:  ack(t, "192.168.1.20", srv, lt, mask, dhcpv4.OptBroadcastAddress(net.ParseIP("192.168.1.127"))),
		want: got{"192.168.1.20/24", "192.168.1.127", "192.168.1.1", "invalid IP", time.Hour, 30 * time.Minute, 3150 * time.Second},
	}, {
		name: "no mask: classful",
		ack:  ack(t, "10.1.2.3", srv, lt),
		want: got{"10.1.2.3/8", "10.255.255.255", "192.168.1.1", "invalid IP", time.Hour, 30 * time.Minute, 3150 * time.Second},
	}, {
		name: "renewal ACK without mask, server or router keeps the previous ones",
		ack:  ack(t, "192.168.1.20", lt),
		prev: &lease{addr: netip.MustParsePrefix("192.168.1.20/23"), brd: netip.MustParseAddr("192.168.1.255"),
			server: netip.MustParseAddr("192.168.0.1"), router: netip.MustParseAddr("192.168.0.254")},
		want: got{"192.168.1.20/23", "192.168.1.255", "192.168.0.1", "192.168.0.254", time.Hour, 30 * time.Minute, 3150 * time.Second},
	}, {
		name: "a previous lease for another address is no fallback",
		ack:  ack(t, "192.168.1.21", lt),
		prev: &lease{addr: netip.MustParsePrefix("192.168.1.20/24"), server: netip.MustParseAddr("192.168.1.1")},
		err:  "no server identifier",
	}, {
		name: "no lease time",
		ack:  ack(t, "192.168.1.20", srv, mask),
		err:  "no lease time (option 51)",
	}, {
		name: "no address",
		ack:  ack(t, "0.0.0.0", srv, lt, mask),
		err:  "carries no address",
	}} {
		l, err := parseACK(tc.ack, sent, tc.prev)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, show(l)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
		if !l.start.Equal(sent) {
			t.Errorf("%s: lease starts %s, want when the request was sent (%s)", tc.name, l.start, sent)
		}
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		err string
	}{
		{Config{Iface: "br0"}, ""},
		{Config{Iface: "br0", Want: netip.MustParsePrefix("192.168.1.20/24")}, ""},
		{Config{}, `interface name ""`},
		{Config{Iface: "a-very-long-bridge-name"}, "want 1 to 15 characters"},
		{Config{Iface: "br/0"}, "none of them '/'"},
		{Config{Iface: "br0", Want: netip.MustParsePrefix("2001:db8::1/64")}, "want an IPv4 prefix"},
	} {
		_, err := New(tc.cfg)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("New(%+v): error %v, want %q", tc.cfg, err, tc.err)
		}
	}
}
