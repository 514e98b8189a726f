package engine

import (
	"strings"
	"testing"
)

const qosStatesHost = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", tap: web1-0, qos: {ingress: 50mbit}}]
  - name: t1
    interfaces: [{network: dev, mac: "52:54:00:00:00:40", tap: t1-0, createTap: true, qos: {ingress: {rate: 100mbit, ceil: 1gbit}}}]
`

// qosStates: ports shaped (one adopted, one created), a rate changed,
// shaping removed from one and the other port gone.
var qosStates = []struct{ name, doc string }{
	{"shaped", qosStatesHost},
	{"changed", strings.Replace(qosStatesHost, "ingress: 50mbit", "ingress: {rate: 20mbit, burst: 64kb}", 1)},
	{"removed", strings.NewReplacer(", qos: {ingress: 50mbit}", "",
		"  - name: t1\n    interfaces: [{network: dev, mac: \"52:54:00:00:00:40\", tap: t1-0, createTap: true, qos: {ingress: {rate: 100mbit, ceil: 1gbit}}}]\n", "").Replace(qosStatesHost)},
}

// TestQoSStates applies qosStates to the fake kernel against goldens;
// each applied twice changes nothing; destroy gives the host back.
func TestQoSStates(t *testing.T) { checkStates(t, fakeHost(), qosStates, "qos-") }

// TestQoSRollbackAtEveryStep fails each kernel call of each qos
// transition in turn: the fake is as before every time.
func TestQoSRollbackAtEveryStep(t *testing.T) { rollbackAtEveryStep(t, fakeHost(), qosStates) }
