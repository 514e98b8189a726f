package sockets

import (
	"net"
	"testing"
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
	got, err := List()
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
