//go:build linux

package dhcp

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

// frame wraps payload in Ethernet (from src), IPv4 and UDP headers to
// port dport.
func frame(src []byte, payload []byte, dport uint16) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[9] = 17
	copy(ip[16:], []byte{255, 255, 255, 255})
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}

func TestRequestFilter(t *testing.T) {
	// x/net/bpf's VM lacks the VLAN extension of the first two
	// instructions; the rest, whose jumps are relative, stands alone.
	vm, err := bpf.NewVM(requestFilter[2:])
	if err != nil {
		t.Fatal(err)
	}
	d := discover(t, macA).ToBytes()
	for _, c := range []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"request", frame(hw(macA), d, 67), true},
		{"reply", frame(hw(macA), d, 68), false},
		{"dns", frame(hw(macA), d, 53), false},
	} {
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != c.pass {
			t.Errorf("%s: filter returned %d, want pass=%t", c.name, n, c.pass)
		}
	}
	in, m, ok := parseRequest(frame(hw(macB), d, 67))
	if !ok || in.MAC.String() != macB || in.IP.String() != "0.0.0.0" || in.Dst.String() != "255.255.255.255" || m.ClientHWAddr.String() != macA {
		t.Errorf("parseRequest = %+v, %v, %v", in, m, ok)
	}
}

// FuzzParseRequest: whatever frame passes the filter, parsing it never
// panics, and what it returns is the frame's: its Ethernet source and a
// message read from inside the UDP payload.
func FuzzParseRequest(f *testing.F) {
	f.Add(frame(hw(macA), discover(&testing.T{}, macA).ToBytes(), 67))
	f.Add(frame(hw(macB), []byte{1, 1, 6}, 67))
	f.Fuzz(func(t *testing.T, fr []byte) {
		in, m, ok := parseRequest(fr)
		if !ok {
			return
		}
		if m == nil || !bytes.Equal(in.MAC, fr[6:12]) || !in.IP.Is4() || !in.Dst.Is4() {
			t.Fatalf("parseRequest(%x) = %+v, %v", fr, in, m)
		}
		if _, err := dhcpv4.FromBytes(m.ToBytes()); err != nil {
			t.Fatalf("parsed message does not encode again: %v", err)
		}
	})
}
