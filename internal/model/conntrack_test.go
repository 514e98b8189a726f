package model

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestConntrack: host: conntrack: is read as written, tcpEstablished gets
// its NAT default, and a file without the section leaves the kernel's
// table alone (nil).
func TestConntrack(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, "testdata/good/conntrack.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Conntrack{
		Max:     CtSize{Auto: true},
		Buckets: CtSize{N: 131072},
		Timeouts: map[string]Duration{
			"udp": {30 * time.Second}, "udpStream": {2 * time.Minute}, "tcpTimeWait": {time.Minute},
			"tcpEstablished": {DefaultTCPEstablished},
		},
	}
	if diff := cmp.Diff(want, c.Host.Conntrack); diff != "" {
		t.Errorf("host.conntrack (-want +got):\n%s", diff)
	}
	none, err := Parse("x.yaml", []byte("networks: [{name: dev, mode: nat, subnet: 192.168.100.0/24}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if none.Host.Conntrack != nil {
		t.Errorf("no conntrack: section gave %+v", none.Host.Conntrack)
	}
	own, err := Parse("x.yaml", []byte("host: {conntrack: {timeouts: {tcpEstablished: 1h}}}\nnetworks: [{name: dev, mode: nat, subnet: 192.168.100.0/24}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := own.Host.Conntrack.Timeouts["tcpEstablished"].Duration; got != time.Hour {
		t.Errorf("tcpEstablished written as 1h reads %s", got)
	}
}
