package sockets

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/kvmnet/kvmnet/internal/plan"
)

func TestParseHexAddrPort(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0016":                         "0.0.0.0:22",
		"00000000000000000000000000000000:0035": "[::]:53",
		"0000000000000000FFFF00000100007F:1F90": "[::ffff:127.0.0.1]:8080",
	} {
		got, err := parseHexAddrPort(in)
		if err != nil || got.String() != want {
			t.Errorf("%s: got %v, %v; want %s", in, got, err, want)
		}
	}
}

// TestListFindsOwnSocket opens a listener on loopback and finds it, with
// this test binary as its owner.
func TestListFindsOwnSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	got, err := List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		if s.Proto == "tcp" && s.Port == port && s.Addr.String() == "127.0.0.1" {
			if s.Process == "" {
				t.Errorf("no owner found for %+v", s)
			}
			return
		}
	}
	t.Errorf("listener on 127.0.0.1:%d not found in %+v", port, got)
}

// TestListKeeps lists only the sockets keep accepts.
func TestListKeeps(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	got, err := List(func(proto string, p uint16) bool { return proto == "tcp" && p == port })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Port != port || got[0].Process == "" {
		t.Errorf("keeping tcp port %d: got %+v, want that one socket with its owner", port, got)
	}
	got, err = List(func(string, uint16) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("keeping nothing: got %+v", got)
	}
}

// TestDiagMatchesProc lists a TCP listener and a UDP socket of its own
// both ways.
func TestDiagMatchesProc(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// Only this test's sockets: others come and go on a shared machine.
	tport, uport := uint16(l.Addr().(*net.TCPAddr).Port), uint16(u.LocalAddr().(*net.UDPAddr).Port)
	keep := func(proto string, port uint16) bool {
		return (proto == "tcp" && port == tport) || (proto == "udp" && port == uport)
	}
	diag, _, err := diagList(keep)
	if err != nil {
		t.Skipf("sock_diag is not available here: %v", err)
	}
	proc, _, err := procList(keep)
	if err != nil {
		t.Fatal(err)
	}
	key := func(ls []plan.Listener) []string {
		var out []string
		for _, l := range ls {
			out = append(out, fmt.Sprintf("%s %s", l.Proto, netip.AddrPortFrom(l.Addr, l.Port)))
		}
		slices.Sort(out)
		return out
	}
	if d, p := key(diag), key(proc); !slices.Equal(d, p) {
		t.Errorf("sock_diag lists %v, /proc/net lists %v", d, p)
	}
	for _, want := range []string{"tcp " + l.Addr().String(), "udp " + u.LocalAddr().String()} {
		if !slices.Contains(key(diag), want) {
			t.Errorf("sock_diag does not list %s: %v", want, key(diag))
		}
	}
}
