package model

import (
	"strings"
	"testing"
)

// vmEdit is how `kvmnet vm attach` and `vm detach` name their arguments.
var vmEdit = Edit{Name: "kvmnet vm attach", Args: map[string]string{
	"vm": "VM", "network": "--network", "mac": "--mac", "ip": "--ip", "tap": "--tap",
	"createTap": "--create-tap", "queues": "--queues", "owner": "--owner",
}}

// TestWithInterfaceRefuses attaches interfaces a file would refuse, and
// checks each is refused naming the argument, with what is wrong, and that
// the config it started from is unchanged.
func TestWithInterfaceRefuses(t *testing.T) {
	base := mustParse(t, forwardDoc("", ""))
	before := mustMarshal(t, base)
	for _, tt := range []struct {
		name string
		a    Attach
		want string
	}{
		{"unknown network", Attach{VM: "db1", Network: "nope", MAC: "52:54:00:00:00:99"}, `kvmnet vm attach: --network: network "nope" does not exist (networks: dev, test, lan)`},
		{"no network", Attach{VM: "db1", MAC: "52:54:00:00:00:99"}, `--network: missing; every interface names the network it sits on`},
		{"no mac", Attach{VM: "db1", Network: "dev"}, `--mac: missing; every interface needs the MAC address`},
		{"bad mac", Attach{VM: "db1", Network: "dev", MAC: "52:54:00"}, `--mac: "52:54:00" is not a MAC address`},
		{"duplicate mac", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:10"}, `--mac: "52:54:00:00:00:10" is already the MAC of VM "web1"`},
		{"ip outside the subnet", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", IP: "10.0.0.5"}, `--ip: "10.0.0.5" is outside`},
		{"ip taken", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", IP: "192.168.100.10"}, `--ip: "192.168.100.10" is already reserved for VM "web1"`},
		{"ip is the gateway", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", IP: "192.168.100.1"}, `is the gateway of network "dev"`},
		{"ip not an address", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", IP: "banana"}, `--ip: "banana" is not an IPv4 address`},
		{"ip on a bridged network", Attach{VM: "db1", Network: "lan", MAC: "52:54:00:00:00:99", IP: "192.168.100.50"}, `--ip: ip is only for interfaces on nat networks`},
		{"tap taken", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", Tap: "web1-0"}, `--tap: tap "web1-0" is already the tap of VM "web1"`},
		{"tap is an uplink", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", Tap: "eth1"}, `--tap: tap "eth1" is the uplink of network "lan"`},
		{"tap too long", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", Tap: "a-very-long-tap-name"}, `--tap: tap name "a-very-long-tap-name"`},
		{"bad vm name", Attach{VM: "no spaces", Network: "dev", MAC: "52:54:00:00:00:99"}, `kvmnet vm attach: VM: "no spaces" is not a valid VM name`},
		{"queues without createTap", Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", Queues: 4}, `--queues: queues needs createTap: true`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := base.WithInterface(tt.a, vmEdit)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v (config %v), want an error containing %q", err, c != nil, tt.want)
			}
			if after := mustMarshal(t, base); after != before {
				t.Errorf("the edit changed the config it started from")
			}
		})
	}
}

func TestWithInterfaceAndWithout(t *testing.T) {
	base := mustParse(t, forwardDoc("", ""))
	c, err := base.WithInterface(Attach{VM: "db1", Network: "dev", MAC: "52:54:00:00:00:99", IP: "192.168.100.30"}, vmEdit)
	if err != nil {
		t.Fatal(err)
	}
	// A second interface of the new VM gets the next default tap.
	c, err = c.WithInterface(Attach{VM: "db1", Network: "test", MAC: "52:54:00:00:00:9a"}, vmEdit)
	if err != nil {
		t.Fatal(err)
	}
	doc := mustMarshal(t, c)
	// What the edits made parses as a file, with the defaults filled.
	parsed := mustParse(t, doc)
	db1 := parsed.VMs[len(parsed.VMs)-1]
	if db1.Name != "db1" || len(db1.Interfaces) != 2 || db1.Interfaces[0].Tap != "db1-0" || db1.Interfaces[1].Tap != "db1-1" || db1.Interfaces[0].IP.String() != "192.168.100.30" {
		t.Fatalf("db1 after two attaches: %+v", db1)
	}
	// Detaching one interface keeps the VM; the last takes it away.
	d := vmEdit
	d.Name = "kvmnet vm detach"
	c2, err := parsed.WithoutInterface("db1", "db1-1", d)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c2.VMs[len(c2.VMs)-1].Interfaces); n != 1 {
		t.Fatalf("db1 after detaching db1-1: %d interfaces", n)
	}
	c3, err := c2.WithoutInterface("db1", "", d)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustMarshal(t, c3); got != mustMarshal(t, base) {
		t.Errorf("attach twice then detach both is not where it started:\n%s\nwant:\n%s", got, mustMarshal(t, base))
	}
	for _, tt := range []struct{ vm, tap, want string }{
		{"nope", "", `kvmnet vm detach: VM: VM "nope" does not exist (VMs: web1, t1, db1)`},
		{"db1", "vnet7", `--tap: VM "db1" has no interface with tap "vnet7" (its taps: db1-0, db1-1)`},
		{"web1", "", `VM: forward 8080/tcp of network "dev" goes to VM "web1" through the interface this removes; remove the forward first`},
	} {
		if _, err := parsed.WithoutInterface(tt.vm, tt.tap, d); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("detach %s %s: %v, want %q", tt.vm, tt.tap, err, tt.want)
		}
	}
}
