package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestQoS parses both forms of a qos direction and writes them back.
func TestQoS(t *testing.T) {
	const file = `networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24}
vms:
  - name: web1
    interfaces:
      - {network: dev, mac: 52:54:00:00:00:10, qos: {ingress: 100mbit}}
      - {network: dev, mac: 52:54:00:00:00:11, qos: {ingress: {rate: 100mbit, ceil: 200mbit, burst: 256kb}, egress: {rate: 10mbit, mode: police}}}
`
	c, err := Parse("host.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	ifs := c.VMs[0].Interfaces
	want := []QoS{
		{Ingress: Shape{Rate: "100mbit"}},
		{Ingress: Shape{Rate: "100mbit", Ceil: "200mbit", Burst: "256kb"}, Egress: Shape{Rate: "10mbit", Mode: ModePolice}},
	}
	for i, w := range want {
		if diff := cmp.Diff(w, ifs[i].QoS); diff != "" {
			t.Errorf("interface %d (-want +got):\n%s", i, diff)
		}
	}
	if got, want := ifs[0].QoS.Ingress.Limits(), (Limits{Rate: 100e6, Ceil: 100e6, Burst: 125000}); got != want {
		t.Errorf("limits of a rate alone = %+v, want %+v", got, want)
	}
	if got, want := ifs[1].QoS.Ingress.Limits(), (Limits{Rate: 100e6, Ceil: 200e6, Burst: 256 << 10}); got != want {
		t.Errorf("limits = %+v, want %+v", got, want)
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse("again.yaml", out)
	if err != nil {
		t.Fatalf("parsing the written file: %v\n%s", err, out)
	}
	for i := range want {
		if diff := cmp.Diff(ifs[i].QoS, again.VMs[0].Interfaces[i].QoS); diff != "" {
			t.Errorf("interface %d written back (-want +got):\n%s", i, diff)
		}
	}
}

// TestQoSErrors checks bad qos values are refused at their key, saying
// what is allowed.
func TestQoSErrors(t *testing.T) {
	const file = `networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24}
vms:
  - name: web1
    interfaces:
      - {network: dev, mac: 52:54:00:00:00:10, qos: {ingress: 0mbit}}
      - {network: dev, mac: 52:54:00:00:00:11, qos: {ingress: {rate: 100mbit, ceil: 50mbit}}}
      - {network: dev, mac: 52:54:00:00:00:12, qos: {ingress: {rate: 1furlong}}}
      - {network: dev, mac: 52:54:00:00:00:13, qos: {ingress: {ceil: 1gbit, burst: 1lb}}}
      - {network: dev, mac: 52:54:00:00:00:14, qos: {ingress: {rate: 1mbit, mode: police}, egress: {rate: 1mbit, mode: fast, colour: red}}}
`
	_, err := Parse("host.yaml", []byte(file))
	var got []string
	for _, e := range Errors(err) {
		got = append(got, e.Error())
	}
	want := []string{
		`host.yaml:6:63: vms[0].interfaces[0].qos.ingress: "0mbit" is out of range (want at least 1bit, e.g. 100mbit)`,
		`host.yaml:7:85: vms[0].interfaces[1].qos.ingress.ceil: ceil "50mbit" is below rate "100mbit" (ceil is what the port may borrow up to, at least its rate); raise ceil or remove it`,
		`host.yaml:8:70: vms[0].interfaces[2].qos.ingress.rate: "1furlong" has an unknown unit "furlong" (` + rateRule + `)`,
		"host.yaml:9:63: vms[0].interfaces[3].qos.ingress: qos ingress has no rate; add one, e.g. {rate: 100mbit}",
		`host.yaml:9:84: vms[0].interfaces[3].qos.ingress.burst: "1lb" has an unknown unit "lb" (` + sizeRule + `)`,
		"host.yaml:10:83: vms[0].interfaces[4].qos.ingress.mode: mode police is only for egress (traffic to the guest is shaped on its tap); remove mode",
		`host.yaml:10:120: vms[0].interfaces[4].qos.egress.mode: "fast" is not a qos mode (want shape or police)`,
		`host.yaml:10:126: vms[0].interfaces[4].qos.egress: unknown key "colour" in a qos direction (allowed: rate, ceil, burst, mode)`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
