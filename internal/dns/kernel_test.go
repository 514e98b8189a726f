package dns

import (
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// TestKernelOnlyOnBridge: a host whose NAT network kvbr0 (10.77.0.0/24)
// has a guest, and whose uplink up0 faces a LAN that routes the subnet to
// the host. The guest resolves; the LAN, asking the gateway address from
// its own address or from one inside the subnet, gets nothing over UDP
// or TCP.
func TestKernelOnlyOnBridge(t *testing.T) {
	host, guest, lan := nstest.New(t), nstest.New(t), nstest.New(t)
	nstest.Run(t, host, "ip", "link", "add", "kvbr0", "type", "bridge")
	nstest.Run(t, host, "ip", "addr", "add", "10.77.0.1/24", "dev", "kvbr0")
	nstest.Run(t, host, "ip", "link", "set", "kvbr0", "up")
	nstest.Run(t, host, "ip", "link", "add", "g0", "type", "veth", "peer", "name", "eth0", "netns", guest)
	nstest.Run(t, host, "ip", "link", "set", "g0", "master", "kvbr0", "up")
	nstest.Run(t, guest, "ip", "addr", "add", "10.77.0.10/24", "dev", "eth0")
	nstest.Run(t, guest, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", lan)
	nstest.Run(t, host, "ip", "addr", "add", "10.88.0.1/24", "dev", "up0")
	nstest.Run(t, host, "ip", "link", "set", "up0", "up")
	nstest.Run(t, lan, "ip", "addr", "add", "10.88.0.2/24", "dev", "eth0")
	// An address inside the NAT subnet, as a LAN host could forge.
	nstest.Run(t, lan, "ip", "addr", "add", "10.77.0.50/32", "dev", "eth0")
	nstest.Run(t, lan, "ip", "link", "set", "eth0", "up")
	nstest.Run(t, lan, "ip", "route", "add", "10.77.0.0/24", "via", "10.88.0.1", "src", "10.88.0.2")
	// Replies to the forged source must find their way back for the
	// test to mean anything: the host routes it to the LAN.
	nstest.Run(t, host, "ip", "route", "add", "10.77.0.50/32", "via", "10.88.0.2")
	nstest.Run(t, host, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.up0.rp_filter=0")

	s, err := newServer(Config{
		Network: "dev", Listen: netip.MustParseAddr("10.77.0.1"), Interface: "kvbr0",
		Domain: "dev.kvm", Subnet: netip.MustParsePrefix("10.77.0.0/24"), Records: testRecords,
	}, nil, "/nonexistent/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	var startErr error
	nstest.Do(t, host, func() { startErr = s.Start() })
	if startErr != nil {
		t.Fatal(startErr)
	}
	t.Cleanup(func() { s.Close() })

	ask := func(ns, proto, src string) (*mdns.Msg, error) {
		var r *mdns.Msg
		var err error
		nstest.Do(t, ns, func() {
			c := &mdns.Client{Net: proto, Timeout: 500 * time.Millisecond}
			if src != "" {
				c.Dialer = dialerFrom(proto, src)
			}
			m := new(mdns.Msg)
			m.SetQuestion("web1.dev.kvm.", mdns.TypeA)
			r, _, err = c.Exchange(m, "10.77.0.1:53")
		})
		return r, err
	}
	for _, proto := range []string{"udp", "tcp"} {
		r, err := ask(guest, proto, "")
		if err != nil || len(r.Answer) != 1 {
			t.Errorf("guest over %s: %v, %v", proto, r, err)
		}
		for _, src := range []string{"10.88.0.2", "10.77.0.50"} {
			if r, err := ask(lan, proto, src); err == nil {
				t.Errorf("lan from %s over %s answered: rcode %s, %d answers", src, proto, mdns.RcodeToString[r.Rcode], len(r.Answer))
			}
		}
	}
}

// dialerFrom dials from local address src.
func dialerFrom(proto, src string) *net.Dialer {
	a := netip.MustParseAddr(src)
	if proto == "tcp" {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: a.AsSlice()}}
	}
	return &net.Dialer{LocalAddr: &net.UDPAddr{IP: a.AsSlice()}}
}
