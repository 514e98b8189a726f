package model_test

import (
	"fmt"

	"github.com/kvmnet/kvmnet/internal/model"
)

func ExampleParse() {
	c, err := model.Parse("host.yaml", []byte(`
networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    forwards:
      - {port: 8080, to: web1:80}
vms:
  - name: web1
    interfaces:
      - {network: dev, mac: 52:54:00:00:00:10, ip: 192.168.100.10}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	dev := c.Network("dev")
	fmt.Println("bridge:", dev.Bridge)
	fmt.Println("gateway:", dev.Gateway)
	fmt.Println("dhcp:", dev.DHCP.Range, dev.DHCP.Lease)
	fmt.Println("domain:", dev.DNS.Domain)
	f := dev.Forwards[0]
	fmt.Printf("forward: %s %d -> %s:%d\n", f.Proto, f.PortFirst, f.ToVM, f.ToPortFirst)
	for _, p := range c.Ports("dev") {
		fmt.Println("port:", p.VM, p.Iface.Tap, p.Iface.HWAddr, p.Iface.IP)
	}
	// Output:
	// bridge: kv-dev
	// gateway: 192.168.100.1
	// dhcp: 192.168.100.128-192.168.100.254 1h
	// domain: dev.kvm
	// forward: tcp 8080 -> web1:80
	// port: web1 web1-0 52:54:00:00:00:10 192.168.100.10
}

func ExampleParse_errors() {
	_, err := model.Parse("host.yaml", []byte(`networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.5/24
  - name: test
    mode: nat
    subnet: 192.168.200.0/24
    gateway: 192.168.201.1
`))
	for _, e := range model.Errors(err) {
		fmt.Println(e)
	}
	// Output:
	// host.yaml:4:13: networks[0].subnet: "192.168.100.5/24" is not a network address: the host bits are set (did you mean 192.168.100.0/24?)
	// host.yaml:8:14: networks[1].gateway: "192.168.201.1" is outside the subnet 192.168.200.0/24 of network "test" (want an address from 192.168.200.1 to 192.168.200.254)
}

func ExampleConfig_Errorf() {
	c, err := model.Parse("host.yaml", []byte(`networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    egress: eth9
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	// What a kernel-aware check elsewhere reports:
	fmt.Println(c.Errorf("networks[0].egress", "interface %q does not exist (interfaces: %s)", "eth9", "eth0, lo"))
	// Output:
	// host.yaml:5:13: networks[0].egress: interface "eth9" does not exist (interfaces: eth0, lo)
}
