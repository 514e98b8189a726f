package snoop

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

// frame wraps a DHCP message in Ethernet, IPv4 and UDP headers.
func frame(t *testing.T, m *dhcpv4.DHCPv4, sport, dport uint16) []byte {
	t.Helper()
	payload := m.ToBytes()
	f := make([]byte, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[9] = 17
	copy(ip[12:], net.IPv4(172, 30, 0, 1).To4())
	copy(ip[16:], net.IPv4bcast.To4())
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}

func TestFilterAndParse(t *testing.T) {
	vm, err := bpf.NewVM(filter)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:00:00:30")
	ack, err := dhcpv4.New(dhcpv4.WithReply(&dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootRequest, ClientHWAddr: mac, HWType: 1}),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(172, 30, 0, 150)),
		dhcpv4.WithServerIP(net.IPv4(172, 30, 0, 1)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(172, 30, 0, 1))),
		dhcpv4.WithLeaseTime(3600))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name         string
		sport, dport uint16
		pass         bool
	}{{"reply", 67, 68, true}, {"request", 68, 67, false}, {"dns", 53, 68, false}} {
		f := frame(t, ack, c.sport, c.dport)
		n, err := vm.Run(f)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != c.pass {
			t.Errorf("%s: filter returned %d, want pass=%t", c.name, n, c.pass)
		}
	}
	r, ok := parse(frame(t, ack, 67, 68))
	if !ok || r.MAC != "52:54:00:00:00:30" || r.IP.String() != "172.30.0.150" || r.Type != dhcpv4.MessageTypeAck || r.Lease != time.Hour || r.Server.String() != "172.30.0.1" {
		t.Errorf("parsed %+v, ok %t", r, ok)
	}
	// An IPv6 frame and a fragment are refused.
	v6 := frame(t, ack, 67, 68)
	binary.BigEndian.PutUint16(v6[12:], 0x86dd)
	frag := frame(t, ack, 67, 68)
	binary.BigEndian.PutUint16(frag[20:], 0x0010)
	for name, f := range map[string][]byte{"ipv6": v6, "fragment": frag} {
		if n, _ := vm.Run(f); n != 0 {
			t.Errorf("%s passed the filter", name)
		}
	}
}
