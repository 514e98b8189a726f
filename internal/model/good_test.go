package model

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// cmpConfig compares Configs by what they say: netip values by value,
// Positions not at all (Positions.Equal).
var cmpConfig = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func ip(s string) netip.Addr       { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ptr[T any](v T) *T            { return &v }

// TestDefaults checks every default Parse fills into the lab file.
func TestDefaults(t *testing.T) {
	got, err := Load(filepath.Join(repoRoot, "testdata/good/lab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Source: filepath.Join(repoRoot, "testdata/good/lab.yaml"),
		Networks: []Network{{
			Name:    "dev",
			Mode:    ModeNAT,
			Backend: BackendLinux,
			Bridge:  "kv-dev",
			Subnet:  prefix("192.168.100.0/24"),
			Gateway: ip("192.168.100.1"),
			DHCP: &DHCP{
				Range:      "192.168.100.128-192.168.100.254",
				Lease:      Duration{time.Hour},
				RangeStart: ip("192.168.100.128"),
				RangeEnd:   ip("192.168.100.254"),
			},
			DNS: DNS{Domain: "dev.kvm"},
			Forwards: []Forward{{
				Proto: "tcp", Port: "8080", To: "web1:80",
				PortFirst: 8080, PortLast: 8080, ToVM: "web1", ToPortFirst: 80,
			}},
		}, {
			Name:    "test",
			Mode:    ModeNAT,
			Backend: BackendLinux,
			Bridge:  "kv-test",
			Subnet:  prefix("192.168.200.0/24"),
			Gateway: ip("192.168.200.1"),
			DHCP: &DHCP{
				Range:      "192.168.200.128-192.168.200.254",
				Lease:      Duration{time.Hour},
				RangeStart: ip("192.168.200.128"),
				RangeEnd:   ip("192.168.200.254"),
			},
			DNS: DNS{Domain: "test.kvm"},
		}},
		VMs: []VM{{
			Name: "web1",
			Interfaces: []Interface{{
				Network: "dev", MAC: "52:54:00:00:00:10", HWAddr: "52:54:00:00:00:10",
				IP: ip("192.168.100.10"), Tap: "web1-0",
			}},
		}, {
			Name: "db1",
			Interfaces: []Interface{{
				Network: "dev", MAC: "52:54:00:00:00:20", HWAddr: "52:54:00:00:00:20", Tap: "db1-0",
			}},
		}, {
			Name: "t1",
			Interfaces: []Interface{{
				Network: "test", MAC: "52:54:00:00:01:10", HWAddr: "52:54:00:00:01:10", Tap: "t1-0",
			}},
		}},
	}
	if diff := cmp.Diff(want, got, cmpConfig); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}

	ports := got.Ports("dev")
	if len(ports) != 2 || ports[0].VM != "web1" || ports[1].VM != "db1" || ports[1].Iface != &got.VMs[1].Interfaces[0] {
		t.Errorf("Ports(dev) = %+v, want web1 then db1, pointing into the config", ports)
	}
	if p := got.Ports("nope"); p != nil {
		t.Errorf("Ports(nope) = %+v, want none", p)
	}
}

// TestParsedForms checks the parsed and defaulted forms of everything.yaml,
// which uses every setting.
func TestParsedForms(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, "testdata/good/everything.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lan, edge, small := c.Network("lan"), c.Network("edge"), c.Network("t")
	if lan.HostAddress != HostAddressDHCP || lan.Bridge != "kv-lan" || lan.DHCP != nil || lan.DNS.Domain != "" {
		t.Errorf("lan = %+v", lan)
	}
	if edge.DHCP.On() || edge.DHCP.Range != "" || edge.DNS.On() || edge.DNS.Domain != "edge.kvm" {
		t.Errorf("edge dhcp/dns = %+v %+v, want both off", edge.DHCP, edge.DNS)
	}
	wantFwd := []Forward{
		{Proto: "tcp", Port: "443", To: "10.20.0.10:8443", Listen: "203.0.113.10", RateLimit: "50/second", Force: true,
			PortFirst: 443, PortLast: 443, ToAddr: ip("10.20.0.10"), ToPortFirst: 8443, ListenAddr: ip("203.0.113.10")},
		{Proto: "tcp", Port: "443", To: "10.20.0.10:8443", Listen: "203.0.113.11",
			PortFirst: 443, PortLast: 443, ToAddr: ip("10.20.0.10"), ToPortFirst: 8443, ListenAddr: ip("203.0.113.11")},
		{Proto: "udp", Port: "443", To: "proxy", From: []string{"198.51.100.7"},
			PortFirst: 443, PortLast: 443, ToVM: "proxy", ToPortFirst: 443, FromPrefixes: []netip.Prefix{prefix("198.51.100.7/32")}},
		{Proto: "tcp", Port: "6000-6009", To: "proxy:7000-7009",
			PortFirst: 6000, PortLast: 6009, ToVM: "proxy", ToPortFirst: 7000},
	}
	if diff := cmp.Diff(wantFwd, edge.Forwards, cmpConfig); diff != "" {
		t.Errorf("edge forwards (-want +got):\n%s", diff)
	}
	// A /30 has one address left for DHCP next to the gateway.
	if small.Gateway != ip("172.16.5.1") || small.DHCP.RangeStart != ip("172.16.5.2") || small.DHCP.RangeEnd != ip("172.16.5.2") {
		t.Errorf("t = gateway %v, range %v", small.Gateway, small.DHCP.Range)
	}

	proxy := c.VMs[0]
	strict := Security{Spoofguard: ptr(true), Isolated: true, MaxConnections: 100000, BroadcastLimit: "100/second"}
	wantIfaces := []Interface{{
		Network: "edge", MAC: "02:00:00:00:00:01", IP: ip("10.20.0.10"), Tap: "proxy-0", CreateTap: true, Queues: 4, Owner: "qemu",
		Security: strict, QoS: QoS{Egress: Shape{Rate: "1gbit"}, Ingress: Shape{Rate: "1.5gbit"}}, HWAddr: "02:00:00:00:00:01",
	}, {
		// Merged from the first, with its own mac, ip and tap.
		Network: "edge", MAC: "02:00:00:00:00:02", IP: ip("10.20.0.11"), Tap: "proxy-second", CreateTap: true, Queues: 4, Owner: "qemu",
		Security: strict, QoS: QoS{Egress: Shape{Rate: "1gbit"}, Ingress: Shape{Rate: "1.5gbit"}}, HWAddr: "02:00:00:00:00:02",
	}}
	if diff := cmp.Diff(wantIfaces, proxy.Interfaces, cmpConfig); diff != "" {
		t.Errorf("proxy interfaces (-want +got):\n%s", diff)
	}
	long := c.VMs[1].Interfaces
	if long[0].Tap != "guest-with-a-0" || long[1].Tap != "guest-with-a-1" || long[0].HWAddr != "02:00:00:00:00:03" {
		t.Errorf("guest-with-a-15 taps %q %q, hwaddr %q", long[0].Tap, long[1].Tap, long[0].HWAddr)
	}
	if long[0].Security.SpoofguardOn() || !long[1].Security.SpoofguardOn() {
		t.Errorf("spoofguard of guest-with-a-15 = %v, %v; want off, on", long[0].Security.SpoofguardOn(), long[1].Security.SpoofguardOn())
	}
	h, err := Load(filepath.Join(repoRoot, "testdata/good/hybrid.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if in := h.VMs[1].Interfaces[0]; in.HWAddr != "52:54:00:ab:cd:ef" || in.MAC != "52:54:00:AB:CD:EF" {
		t.Errorf("MAC %q normalised to %q, want 52:54:00:ab:cd:ef", in.MAC, in.HWAddr)
	}
}

// TestMarshalRoundTrip checks that Marshal writes what Parse reads back to
// the same Config, and that doing it again changes nothing.
func TestMarshalRoundTrip(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot, "testdata/good/*.yaml"))
	if len(files) < 3 {
		t.Fatalf("found %d good files", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c1, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			out := mustMarshal(t, c1)
			c2, err := Parse(path, []byte(out))
			if err != nil {
				t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
			}
			if diff := cmp.Diff(c1, c2, cmpConfig); diff != "" {
				t.Errorf("round trip (-want +got):\n%s\n%s", diff, out)
			}
			if again := mustMarshal(t, c2); again != out {
				t.Errorf("second Marshal differs:\n%s\nvs\n%s", out, again)
			}
		})
	}
}

func TestErrorfPositions(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "testdata/good/hybrid.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("host.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		// A key the file has: the position of its value.
		{"networks[1].egress", `host.yaml:14:13: networks[1].egress: interface "eth0" does not exist`},
		// A key it does not have: the enclosing mapping.
		{"networks[0].mtu", `host.yaml:3:5: networks[0].mtu: interface "eth0" does not exist`},
		{"vms[1].interfaces[0].tap", `host.yaml:30:9: vms[1].interfaces[0].tap: interface "eth0" does not exist`},
		{"networks[1].dhcp.range", `host.yaml:12:19: networks[1].dhcp.range: interface "eth0" does not exist`},
		{"networks[1].forwards[1].from[0]", `host.yaml:17:56: networks[1].forwards[1].from[0]: interface "eth0" does not exist`},
		{"", `host.yaml:1:1: interface "eth0" does not exist`},
	} {
		if got := c.Errorf(tt.path, "interface %q does not exist", "eth0").Error(); got != tt.want {
			t.Errorf("Errorf(%q) = %s\nwant %s", tt.path, got, tt.want)
		}
	}
	// A Config built in code has no positions.
	e := (&Config{Source: "x.yaml"}).Errorf("networks[0]", "broken")
	if got := e.Error(); got != "x.yaml: networks[0]: broken" {
		t.Errorf("without positions: %s", got)
	}
}

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
	}{
		{"100mbit", 100e6}, {"1.5gbit", 1.5e9}, {"10mbps", 80e6}, {"1Gbit", 1e9}, {"8bit", 8}, {"1tbps", 8e12},
	} {
		if got, err := ParseRate(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "100", "mbit", "100 mbit", "0mbit", "-1mbit", "100mb", "1e3mbit"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted it", in)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	if n, per, err := ParseRateLimit("600/minute"); err != nil || n != 600 || per != time.Minute {
		t.Errorf("ParseRateLimit(600/minute) = %d, %v, %v", n, per, err)
	}
	for _, in := range []string{"", "0/second", "10/hour", "10/s", "ten/second", "10"} {
		if _, _, err := ParseRateLimit(in); err == nil {
			t.Errorf("ParseRateLimit(%q) accepted it", in)
		}
	}
}

func TestDefaultNames(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{DefaultBridge("dev"), "kv-dev"},
		{DefaultBridge("production-net1"), "kv-production-n"},
		{DefaultTap("web1", 0), "web1-0"},
		{DefaultTap("webserver-long1", 0), "webserver-lon-0"},
		{DefaultTap("webserver-long1", 12), "webserver-lo-12"},
		{DefaultTap("guest-with-a-15", 1), "guest-with-a-1"},
	} {
		if tt.got != tt.want || len(tt.got) > 15 {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for _, tt := range []struct{ subnet, gw, want string }{
		{"192.168.100.0/24", "192.168.100.1", "192.168.100.128-192.168.100.254"},
		{"10.0.0.0/8", "10.0.0.1", "10.128.0.0-10.255.255.254"},
		{"192.168.100.0/24", "192.168.100.200", "192.168.100.128-192.168.100.199"},
		{"192.168.100.0/24", "192.168.100.130", "192.168.100.131-192.168.100.254"},
		{"192.168.100.0/30", "192.168.100.1", "192.168.100.2-192.168.100.2"},
		{"192.168.100.0/30", "192.168.100.2", "none"},
	} {
		got := "none"
		if s, e, ok := DefaultDHCPRange(prefix(tt.subnet), ip(tt.gw)); ok {
			got = s.String() + "-" + e.String()
		}
		if got != tt.want {
			t.Errorf("DefaultDHCPRange(%s, %s) = %s, want %s", tt.subnet, tt.gw, got, tt.want)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 90 * time.Minute: "1h30m", 30 * time.Minute: "30m", 45 * time.Second: "45s", 0: "0s",
		time.Hour + time.Second: "1h0m1s",
	} {
		if got := (Duration{d}).String(); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
	if !strings.Contains(mustMarshal(t, &Config{Networks: []Network{{Name: "x", DHCP: &DHCP{Lease: Duration{2 * time.Hour}}}}}), "lease: 2h\n") {
		t.Error("Marshal does not write leases as 2h")
	}
}
