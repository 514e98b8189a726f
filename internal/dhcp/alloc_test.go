package dhcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/store"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	macA    = "52:54:00:00:00:0a"
	macB    = "52:54:00:00:00:0b"
	macC    = "52:54:00:00:00:0c"
	macD    = "52:54:00:00:00:0d"
	macRes  = "52:54:00:00:00:10" // reserved 10.0.0.10, outside the range
	macRes2 = "52:54:00:00:00:11" // reserved 10.0.0.102, inside the range
)

// testConfig has a pool of three addresses a guest without a reservation can
// get: .100, .101 and .103 (.102 is reserved).
func testConfig() Config {
	return Config{
		Network:    "dev",
		Interface:  "kv-dev",
		ServerIP:   netip.MustParseAddr("10.0.0.1"),
		Subnet:     netip.MustParsePrefix("10.0.0.0/24"),
		RangeStart: netip.MustParseAddr("10.0.0.100"),
		RangeEnd:   netip.MustParseAddr("10.0.0.103"),
		LeaseTime:  time.Hour,
		Router:     netip.MustParseAddr("10.0.0.1"),
		Reservations: []Reservation{
			{MAC: "52:54:00:00:00:10", IP: netip.MustParseAddr("10.0.0.10"), Hostname: "web1"},
			{MAC: "52:54:00:00:00:11", IP: netip.MustParseAddr("10.0.0.102"), Hostname: "db1"},
		},
		Ports: []Port{
			{Tap: "web1-0", MAC: macRes, Spoofguard: true},
			{Tap: "db1-0", MAC: macRes2, Spoofguard: true},
		},
	}
}

func lease(mac, ip string, expiry time.Time) store.Lease {
	return store.Lease{Network: "dev", MAC: mac, IP: netip.MustParseAddr(ip), Expiry: expiry}
}

// step is one client message at t0+at. want is the offered address or
// "exhausted" for discover, "ack" or "nak" for request; release and decline
// have no result.
type step struct {
	at   time.Duration
	op   string
	mac  string
	ip   string // requested address (discover: option 50; others: the address)
	want string
}

func TestAllocator(t *testing.T) {
	tests := []struct {
		name   string
		cfg    func(*Config)
		leases []store.Lease
		steps  []step
	}{{
		name: "reserved MAC gets its address whatever it asks",
		steps: []step{
			{op: "discover", mac: macRes, ip: "10.0.0.100", want: "10.0.0.10"},
			{op: "request", mac: macRes, ip: "10.0.0.100", want: "nak"},
			{op: "request", mac: macRes, ip: "10.0.0.10", want: "ack"},
			{op: "discover", mac: macRes2, want: "10.0.0.102"},
		},
	}, {
		name: "reserved address is never offered to others",
		steps: []step{
			{op: "discover", mac: macA, ip: "10.0.0.102", want: "10.0.0.100"},
			{op: "discover", mac: macB, want: "10.0.0.101"},
			{op: "discover", mac: macC, want: "10.0.0.103"},
			{op: "discover", mac: macD, want: "exhausted"},
			{op: "request", mac: macD, ip: "10.0.0.102", want: "nak"},
			{op: "request", mac: macD, ip: "10.0.0.10", want: "nak"},
		},
	}, {
		name: "offers are held and repeated",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "discover", mac: macB, want: "10.0.0.101"},
			// Another client may not take a held offer...
			{op: "request", mac: macC, ip: "10.0.0.100", want: "nak"},
			// ...until the hold runs out.
			{at: offerHold, op: "discover", mac: macC, ip: "10.0.0.100", want: "10.0.0.100"},
		},
	}, {
		name: "server and router addresses are never handed out",
		cfg: func(c *Config) {
			c.RangeStart = netip.MustParseAddr("10.0.0.1")
			c.RangeEnd = netip.MustParseAddr("10.0.0.3")
			c.Router = netip.MustParseAddr("10.0.0.2")
		},
		steps: []step{
			{op: "discover", mac: macA, ip: "10.0.0.1", want: "10.0.0.3"},
			{op: "discover", mac: macB, want: "exhausted"},
			{op: "request", mac: macB, ip: "10.0.0.2", want: "nak"},
		},
	}, {
		name: "requested address is honoured when free",
		steps: []step{
			{op: "discover", mac: macA, ip: "10.0.0.103", want: "10.0.0.103"},
			{op: "request", mac: macA, ip: "10.0.0.103", want: "ack"},
			{op: "discover", mac: macB, ip: "10.0.0.103", want: "10.0.0.100"},
			// Outside the range, or outside the subnet: ignored.
			{op: "discover", mac: macC, ip: "10.0.0.50", want: "10.0.0.101"},
			{op: "request", mac: macD, ip: "192.168.1.5", want: "nak"},
		},
	}, {
		name: "existing lease is kept, expired or not",
		leases: []store.Lease{
			lease(macA, "10.0.0.103", t0.Add(time.Minute)),
			lease(macB, "10.0.0.101", t0.Add(-time.Hour)),
		},
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.103"},
			{op: "discover", mac: macB, want: "10.0.0.101"},
			// INIT-REBOOT straight to REQUEST after a restart.
			{op: "request", mac: macA, ip: "10.0.0.103", want: "ack"},
			{op: "request", mac: macB, ip: "10.0.0.101", want: "ack"},
		},
	}, {
		name: "newcomer does not get a leased address, even an expired one",
		leases: []store.Lease{
			lease(macA, "10.0.0.100", t0.Add(time.Hour)),
			lease(macB, "10.0.0.101", t0.Add(-time.Hour)),
		},
		steps: []step{
			{op: "discover", mac: macC, ip: "10.0.0.101", want: "10.0.0.103"},
			{op: "request", mac: macD, ip: "10.0.0.100", want: "nak"},
			{op: "request", mac: macD, ip: "10.0.0.101", want: "nak"},
		},
	}, {
		name: "expired leases are reclaimed when needed, longest expired first",
		leases: []store.Lease{
			lease(macA, "10.0.0.100", t0.Add(-time.Minute)),
			lease(macB, "10.0.0.101", t0.Add(-time.Hour)),
			lease(macC, "10.0.0.103", t0.Add(time.Hour)),
		},
		steps: []step{
			{op: "discover", mac: macD, want: "10.0.0.101"},
			{op: "request", mac: macD, ip: "10.0.0.101", want: "ack"},
			// B lost its address and gets the next expired one.
			{op: "discover", mac: macB, want: "10.0.0.100"},
			{op: "request", mac: macB, ip: "10.0.0.100", want: "ack"},
			// A's lease was reclaimed by B: A now finds the pool full.
			{op: "discover", mac: macA, want: "exhausted"},
			{op: "request", mac: macA, ip: "10.0.0.100", want: "nak"},
		},
	}, {
		name: "unexpired leases are never reclaimed",
		leases: []store.Lease{
			lease(macA, "10.0.0.100", t0.Add(time.Second)),
			lease(macB, "10.0.0.101", t0.Add(time.Second)),
			lease(macC, "10.0.0.103", t0.Add(time.Second)),
		},
		steps: []step{
			{op: "discover", mac: macD, want: "exhausted"},
			{at: time.Second, op: "discover", mac: macD, want: "10.0.0.100"},
		},
	}, {
		name: "renewal of own lease",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{at: 30 * time.Minute, op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{at: 2 * time.Hour, op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{at: 2 * time.Hour, op: "request", mac: macB, ip: "10.0.0.100", want: "nak"},
		},
	}, {
		name: "released address goes back to its owner first",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{op: "release", mac: macA, ip: "10.0.0.100"},
			{op: "discover", mac: macB, want: "10.0.0.101"},
			{op: "discover", mac: macA, want: "10.0.0.100"},
		},
	}, {
		name: "declined address leaves the pool for a while",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{op: "decline", mac: macA, ip: "10.0.0.100", want: "declined"},
			{op: "discover", mac: macA, want: "10.0.0.101"},
			{op: "request", mac: macB, ip: "10.0.0.100", want: "nak"},
			{at: declineHold, op: "discover", mac: macB, want: "10.0.0.100"},
		},
	}, {
		name: "only the holder of an address can decline it",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{op: "decline", mac: macB, ip: "10.0.0.100", want: "ignored"},
			{op: "decline", mac: macB, ip: "10.0.0.101", want: "ignored"},
			{op: "decline", mac: macA, ip: "10.0.0.101", want: "ignored"},
			{op: "request", mac: macA, ip: "10.0.0.100", want: "ack"},
			{op: "discover", mac: macB, want: "10.0.0.101"},
		},
	}, {
		name: "declines cannot exhaust the pool",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "decline", mac: macA, ip: "10.0.0.100", want: "declined"},
			{at: time.Second, op: "discover", mac: macA, want: "10.0.0.101"},
			{at: time.Second, op: "decline", mac: macA, ip: "10.0.0.101", want: "declined"},
			{at: 2 * time.Second, op: "discover", mac: macA, want: "10.0.0.103"},
			{at: 2 * time.Second, op: "decline", mac: macA, ip: "10.0.0.103", want: "declined"},
			// Every pool address is declined: the one whose hold ends
			// first is offered rather than nothing, and can be leased.
			{at: 3 * time.Second, op: "discover", mac: macB, want: "10.0.0.100"},
			{at: 3 * time.Second, op: "request", mac: macB, ip: "10.0.0.100", want: "ack"},
			{at: 3 * time.Second, op: "discover", mac: macC, want: "10.0.0.101"},
			// Without an offer a declined address is still refused.
			{at: 3 * time.Second, op: "request", mac: macD, ip: "10.0.0.103", want: "nak"},
		},
	}, {
		name: "client chose another server",
		steps: []step{
			{op: "discover", mac: macA, want: "10.0.0.100"},
			{op: "other-server", mac: macA},
			{op: "discover", mac: macB, want: "10.0.0.100"},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			cfg, err := cfg.validate()
			if err != nil {
				t.Fatal(err)
			}
			a, stale := newAllocator(cfg, tc.leases)
			if len(stale) != 0 {
				t.Fatalf("stale leases %v", stale)
			}
			for i, s := range tc.steps {
				runStep(t, a, i, s)
			}
		})
	}
}

func runStep(t *testing.T, a *allocator, i int, s step) {
	t.Helper()
	now := t0.Add(s.at)
	var ip netip.Addr
	if s.ip != "" {
		ip = netip.MustParseAddr(s.ip)
	}
	var got string
	switch s.op {
	case "discover":
		off, err := a.discover(s.mac, ip, now)
		got = off.String()
		if err == errExhausted {
			got = "exhausted"
		} else if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	case "request":
		got = "nak"
		if a.canLease(s.mac, ip, now) {
			got = "ack"
			a.commit(a.lease(s.mac, ip, "", now))
		}
	case "release":
		if _, ok := a.release(s.mac, ip, now); !ok {
			t.Fatalf("step %d: release of %s by %s found no lease", i, ip, s.mac)
		}
	case "decline":
		declined, _ := a.decline(s.mac, ip, now)
		got = "ignored"
		if declined {
			got = "declined"
		}
	case "other-server":
		a.forgetOffer(s.mac)
	default:
		t.Fatalf("step %d: unknown op %q", i, s.op)
	}
	if got != s.want {
		t.Errorf("step %d: %s by %s (ip %q) at +%v = %s, want %s", i, s.op, s.mac, s.ip, s.at, got, s.want)
	}
}

func TestAllocatorConflictingLeases(t *testing.T) {
	cfg, err := testConfig().validate()
	if err != nil {
		t.Fatal(err)
	}
	a, stale := newAllocator(cfg, []store.Lease{
		lease(macA, "10.0.0.100", t0.Add(2*time.Hour)),
		lease(macB, "10.0.0.100", t0.Add(time.Hour)),
	})
	if diff := cmp.Diff([]string{macB}, stale); diff != "" {
		t.Errorf("stale (-want +got):\n%s", diff)
	}
	if ip, _ := a.discover(macA, netip.Addr{}, t0); ip != netip.MustParseAddr("10.0.0.100") {
		t.Errorf("winner of the conflict offered %s", ip)
	}
	if ip, _ := a.discover(macB, netip.Addr{}, t0); ip != netip.MustParseAddr("10.0.0.101") {
		t.Errorf("loser of the conflict offered %s", ip)
	}
}

func TestAllocatorUpdate(t *testing.T) {
	cfg, err := testConfig().validate()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newAllocator(cfg, nil)
	runStep(t, a, 0, step{op: "discover", mac: macA, want: "10.0.0.100"})
	runStep(t, a, 1, step{op: "request", mac: macA, ip: "10.0.0.100", want: "ack"})
	runStep(t, a, 2, step{op: "discover", mac: macB, want: "10.0.0.101"})

	// Reserve A's and B's addresses for C and D: A is refused on renewal,
	// B's pending offer is withdrawn, and C and D get them at once.
	cfg.Reservations = append(cfg.Reservations,
		Reservation{MAC: macC, IP: netip.MustParseAddr("10.0.0.100")},
		Reservation{MAC: macD, IP: netip.MustParseAddr("10.0.0.101")})
	cfg, err = cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	a.setConfig(cfg)
	for i, s := range []step{
		{op: "request", mac: macA, ip: "10.0.0.100", want: "nak"},
		{op: "request", mac: macB, ip: "10.0.0.101", want: "nak"},
		{op: "discover", mac: macC, want: "10.0.0.100"},
		{op: "request", mac: macC, ip: "10.0.0.100", want: "ack"},
		{op: "discover", mac: macA, want: "10.0.0.103"},
		{op: "discover", mac: macD, want: "10.0.0.101"},
	} {
		runStep(t, a, 3+i, s)
	}
	// C displaced A's record.
	for _, l := range a.all() {
		if l.MAC == macA {
			t.Errorf("A still holds %s", l.IP)
		}
	}

	// Shrinking the range: a lease outside it is refused on renewal.
	cfg.RangeEnd = netip.MustParseAddr("10.0.0.100")
	cfg, err = cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	a.setConfig(cfg)
	runStep(t, a, 9, step{op: "discover", mac: macB, want: "exhausted"})
}

func TestPoolStatus(t *testing.T) {
	cfg, err := testConfig().validate()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newAllocator(cfg, []store.Lease{
		lease(macA, "10.0.0.100", t0.Add(time.Hour)),
		lease(macB, "10.0.0.101", t0.Add(-time.Hour)), // expired: free
		lease(macRes, "10.0.0.10", t0.Add(time.Hour)), // outside the pool
	})
	want := PoolStatus{Network: "dev", Size: 3, Used: 1, Free: 2, Reserved: 2}
	if diff := cmp.Diff(want, a.status(t0)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if ip, err := a.discover(macC, netip.Addr{}, t0); err != nil || ip != netip.MustParseAddr("10.0.0.103") {
		t.Fatalf("C offered %s, %v; want 10.0.0.103", ip, err)
	}
	// D is offered B's expired lease and declines it.
	if ip, err := a.discover(macD, netip.Addr{}, t0); err != nil || ip != netip.MustParseAddr("10.0.0.101") {
		t.Fatalf("D offered %s, %v; want 10.0.0.101", ip, err)
	}
	if declined, _ := a.decline(macD, netip.MustParseAddr("10.0.0.101"), t0); !declined {
		t.Fatal("D's decline of its offer was ignored")
	}
	want = PoolStatus{Network: "dev", Size: 3, Used: 3, Free: 0, Reserved: 2}
	if diff := cmp.Diff(want, a.status(t0)); diff != "" {
		t.Errorf("status with offer and decline (-want +got):\n%s", diff)
	}
}

func TestConfigValidate(t *testing.T) {
	// Each bad config must be refused for its own fault: want is the
	// error's text after "dhcp config of network "dev": ", so a check
	// that refuses for the wrong reason fails.
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no network", func(c *Config) { c.Network = "" }, "dhcp config: network name is empty"},
		{"no interface", func(c *Config) { c.Interface = "" }, "interface is empty"},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") }, `subnet "fd00::/64" must be an IPv4 prefix of length 30 or shorter`},
		{"server outside subnet", func(c *Config) { c.ServerIP = netip.MustParseAddr("10.0.1.1") }, `server address "10.0.1.1" must be a host address of subnet 10.0.0.0/24`},
		{"server is network address", func(c *Config) { c.ServerIP = netip.MustParseAddr("10.0.0.0") }, `server address "10.0.0.0" must be a host address of subnet 10.0.0.0/24`},
		{"range outside subnet", func(c *Config) { c.RangeEnd = netip.MustParseAddr("10.0.1.5") }, "range 10.0.0.100-10.0.1.5 must lie inside subnet 10.0.0.0/24"},
		{"range reversed", func(c *Config) { c.RangeStart = netip.MustParseAddr("10.0.0.200") }, "range 10.0.0.200-10.0.0.103 ends before it starts"},
		{"negative lease", func(c *Config) { c.LeaseTime = -time.Second }, "lease time -1s must be positive and below 136 years"},
		{"bad mtu", func(c *Config) { c.MTU = 10 }, "MTU 10 must be between 68 and 65535 (or 0 to send none)"},
		{"bad dns", func(c *Config) { c.DNS = []netip.Addr{netip.MustParseAddr("::1")} }, `DNS server "::1" is not an IPv4 address`},
		{"bad mac", func(c *Config) { c.Reservations[0].MAC = "web1" }, `reservation MAC "web1" is not an Ethernet address like 52:54:00:00:00:10`},
		{"reservation outside subnet", func(c *Config) { c.Reservations[0].IP = netip.MustParseAddr("10.1.0.5") }, `reserved address "10.1.0.5" of 52:54:00:00:00:10 must be a host address of subnet 10.0.0.0/24 other than the server and router`},
		{"reservation on server", func(c *Config) { c.Reservations[0].IP = c.ServerIP }, `reserved address "10.0.0.1" of 52:54:00:00:00:10 must be a host address of subnet 10.0.0.0/24 other than the server and router`},
		{"duplicate mac", func(c *Config) { c.Reservations[1].MAC = "52-54-00-00-00-10" }, "MAC 52:54:00:00:00:10 has two reservations"},
		{"duplicate ip", func(c *Config) { c.Reservations[1].IP = c.Reservations[0].IP }, "address 10.0.0.10 is reserved twice"},
		{"bad port mac", func(c *Config) { c.Ports[0].MAC = "x" }, `MAC "x" of port "web1-0" is not an Ethernet address like 52:54:00:00:00:10`},
		{"port without name", func(c *Config) { c.Ports[0].Tap = "" }, "port of MAC 52:54:00:00:00:10 has no name"},
		{"duplicate port", func(c *Config) { c.Ports[1].Tap = c.Ports[0].Tap }, `port "web1-0" or MAC 52:54:00:00:00:11 is listed twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.mod(&c)
			_, err := c.validate()
			want := tc.want
			if c.Network != "" {
				want = `dhcp config of network "dev": ` + want
			}
			if err == nil || err.Error() != want {
				t.Errorf("validate() = %v, want %s", err, want)
			}
		})
	}
	c := testConfig()
	c.LeaseTime = 0
	c.Reservations[0].MAC = "52:54:00:00:00:AB"
	got, err := c.validate()
	if err != nil {
		t.Fatal(err)
	}
	if got.LeaseTime != DefaultLeaseTime || got.Reservations[0].MAC != "52:54:00:00:00:ab" {
		t.Errorf("defaults not applied: %+v", got)
	}
}
