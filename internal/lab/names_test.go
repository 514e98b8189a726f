package lab

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/model"
)

func TestValidatePrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"kvl", true},
		{"KVL-2", true},
		{"a", true},
		{"0123456789", true},
		{"", false},
		{"01234567890", false},
		{"-kvl", false},
		{"kvl-", false},
		{"kv_l", false},
		{"kv/l", false},
		{"kv l", false},
		{"kvlé", false},
	} {
		err := ValidatePrefix(tc.prefix)
		if (err == nil) != tc.ok {
			t.Errorf("ValidatePrefix(%q) = %v, want ok=%v", tc.prefix, err, tc.ok)
		}
	}
}

func TestNSNames(t *testing.T) {
	got := []string{nsName("kvl", NodeLAN), nsName("kvl", NodeInet), nsName("kvl", NodeHost), nsName("kvl", "web1")}
	want := []string{"kvl-lan", "kvl-inet", "kvl-host", "kvl-vm-web1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("namespace names (-want +got):\n%s", diff)
	}
}

func TestBelongsTo(t *testing.T) {
	others := []string{"kvl", "kvl-2", "abc"}
	for _, tc := range []struct {
		prefix, name string
		want         bool
	}{
		{"kvl", "kvl-lan", true},
		{"kvl", "kvl-vm-web1", true},
		{"kvl", "kvl-host.sock", true},
		{"kvl", "kvl", false},
		{"kvl", "kvlx-lan", false},
		{"kvl", "kvl-2-lan", false}, // lab kvl-2's
		{"kvl-2", "kvl-2-lan", true},
		{"kvl-2", "kvl-lan", false},
		{"abc", "kvl-lan", false},
	} {
		if got := belongsTo(tc.prefix, tc.name, others); got != tc.want {
			t.Errorf("belongsTo(%q, %q) = %v, want %v", tc.prefix, tc.name, got, tc.want)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	vm := func(name string, ifs ...model.Interface) model.VM { return model.VM{Name: name, Interfaces: ifs} }
	ifc := func(tap, mac string) model.Interface { return model.Interface{Network: "dev", Tap: tap, HWAddr: mac} }
	for _, tc := range []struct {
		name    string
		vms     []model.VM
		wantErr string // "" for no error
	}{
		{"ok", []model.VM{vm("web1", ifc("web1-0", "52:54:00:00:00:10")), vm("web2", ifc("web2-0", "52:54:00:00:00:11"))}, ""},
		{"createTap needs nothing", []model.VM{vm("web1", model.Interface{CreateTap: true})}, ""},
		{"reserved name", []model.VM{vm("host", ifc("h-0", "52:54:00:00:00:10"))}, "taken by a lab node"},
		{"bad name", []model.VM{vm("a/b")}, "lab needs a name"},
		{"duplicate VM", []model.VM{vm("a"), vm("a")}, "defined twice"},
		{"no tap", []model.VM{vm("a", ifc("", "52:54:00:00:00:10"))}, "set Tap"},
		{"long tap", []model.VM{vm("a", ifc("0123456789abcdef", "52:54:00:00:00:10"))}, "tap name"},
		{"tap is host NIC", []model.VM{vm("a", ifc("eth0", "52:54:00:00:00:10"))}, "the host's LAN NIC"},
		{"duplicate tap", []model.VM{vm("a", ifc("t0", "52:54:00:00:00:10")), vm("b", ifc("t0", "52:54:00:00:00:11"))}, `already used by VM "a"`},
		{"no MAC", []model.VM{vm("a", ifc("t0", ""))}, "set it when building"},
		{"long MAC", []model.VM{vm("a", ifc("t0", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"))}, "six bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkConfig(&model.Config{VMs: tc.vms})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("checkConfig: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("checkConfig: got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if err := checkConfig(nil); err != nil {
		t.Errorf("checkConfig(nil) = %v", err)
	}
}

func TestParseLease(t *testing.T) {
	got, err := parseLease("ip=172.30.0.150\nmask=24\nrouter=172.30.0.1 172.30.0.254\ndns=172.30.0.1 203.0.113.10\ndomain=lab\nlease=3600\nserverid=172.30.0.1\nmtu=1400\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Lease{
		IP:        netip.MustParseAddr("172.30.0.150"),
		Prefix:    netip.MustParsePrefix("172.30.0.150/24"),
		Router:    netip.MustParseAddr("172.30.0.1"),
		DNS:       []netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("203.0.113.10")},
		Domain:    "lab",
		LeaseTime: time.Hour,
		ServerID:  netip.MustParseAddr("172.30.0.1"),
		MTU:       1400,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("parseLease (-want +got):\n%s", diff)
	}

	// A lease with nothing but an address: no router, DNS or MTU.
	got, err = parseLease("ip=10.0.0.5\nmask=8\nrouter=\ndns=\ndomain=\nlease=\nserverid=\nmtu=\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Router.IsValid() || got.DNS != nil || got.MTU != 0 || got.Prefix.String() != "10.0.0.5/8" {
		t.Errorf("parseLease of a bare lease = %+v", got)
	}

	for _, bad := range []string{"", "ip=x\nmask=24\n", "ip=10.0.0.5\nmask=33\n", "ip=10.0.0.5\nmask=24\nlease=1h\n"} {
		if _, err := parseLease(bad); err == nil {
			t.Errorf("parseLease(%q) succeeded, want an error", bad)
		}
	}
}

// TestDHCPScript checks the script writes the VM's resolver under
// /etc/netns and never the machine's /etc/resolv.conf.
func TestDHCPScript(t *testing.T) {
	s, err := dhcpScript(scriptData{
		Lab: "kvl", VM: "web1", IP: "/usr/sbin/ip",
		Resolv: "/etc/netns/kvl-vm-web1/resolv.conf",
		Lease:  "/run/kvmnet/lab/kvl/lease-web1-eth0",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/bin/sh\n",
		"RESOLV='/etc/netns/kvl-vm-web1/resolv.conf'\n",
		"LEASE='/run/kvmnet/lab/kvl/lease-web1-eth0'\n",
		`>"$RESOLV"`,
		`route replace default via "$gw"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.Contains(line, "/etc/resolv.conf") {
			t.Errorf("script mentions /etc/resolv.conf outside comments: %q", line)
		}
	}

	// Names are quoted for the shell, whatever they hold.
	s, err = dhcpScript(scriptData{Lab: "kvl", VM: "it's", IP: "ip", Resolv: "/etc/netns/x y/resolv.conf", Lease: "/tmp/l"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, `RESOLV='/etc/netns/x y/resolv.conf'`) || !strings.Contains(s, `VM 'it'\''s'`) {
		t.Errorf("script does not quote its values:\n%s", s)
	}
}
