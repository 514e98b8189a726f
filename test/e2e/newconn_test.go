//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const newConnConfig = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, dhcp: {range: 192.168.100.100-192.168.100.199}}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
  - name: greedy
    interfaces: [{network: dev, mac: "52:54:00:00:00:30", ip: 192.168.100.30, tap: greedy-0, security: {maxConnections: 20, newConnections: 50/second}}]
`

// TestNewConnections: a guest under its maxConnections cap floods SYNs
// (hping3 -S --flood) at a closed port of the internet host; its
// newConnections rate of 50/second admits 50 new connections a second,
// drops the rest under new_connections, and a neighbour still connects.
//
// Admissions are counted from conntrack's NEW events, not from the table:
// the internet host answers each SYN with a RST, and the kernel destroys
// an entry whose only reply is a RST at once (nf_conntrack_proto_tcp.c),
// so a listing shows none of the flood's entries however many passed.
func TestNewConnections(t *testing.T) {
	requireTools(t, "hping3", "conntrack", "socat", "curl")
	const rate, burst = 50, 5 // greedy's newConnections; nft's default burst (packets)
	w := newWorld(t, newConnConfig)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	w.lease("web1")
	w.lease("greedy")
	w.serve("inet", "socat", "TCP-LISTEN:9001,reuseaddr,fork", "SYSTEM:echo hello")
	w.waitFor("inet listener", 5*time.Second, func() bool {
		out, _ := w.exec("inet", "ss", "-ltn")
		return strings.Contains(out, ":9001 ")
	})

	// greedy's new TCP connections through the host, one NEW event each.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events syncBuffer
	listener := w.lab.Command(ctx, "host", "conntrack", "-E", "-e", "NEW", "-p", "tcp", "-s", "192.168.100.30")
	listener.Stdout, listener.Stderr = &events, &events
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); listener.Wait() }()
	// admitted counts the events of greedy's connections to port (the
	// original direction's port: the reply's may be anything).
	admitted := func(port int) int {
		re := regexp.MustCompile(`(?m)^.*?src=192\.168\.100\.30 dst=203\.0\.113\.10 sport=\d+ dport=` + strconv.Itoa(port) + ` `)
		return len(re.FindAllString(events.String(), -1))
	}
	connect := func(vm string) error {
		out, err := w.exec(vm, "socat", "-T2", "-", "TCP:203.0.113.10:9001,connect-timeout=2")
		if err == nil && !strings.Contains(out, "hello") {
			err = fmt.Errorf("got %q", out)
		}
		return err
	}
	// Under its rate, greedy connects as any guest does; once conntrack
	// reports it, the listener is subscribed.
	w.waitFor("greedy's connection in conntrack's events", 10*time.Second, func() bool {
		if err := connect("greedy"); err != nil {
			t.Fatalf("greedy could not connect before its flood: %v", err)
		}
		return admitted(9001) > 0
	})
	before := w.drops("greedy-0", "new_connections")

	start := time.Now()
	floodCtx, stopFlood := context.WithCancel(context.Background())
	flood := w.lab.Command(floodCtx, "greedy", "hping3", "-S", "--flood", "-p", "9000", "203.0.113.10")
	if err := flood.Start(); err != nil {
		stopFlood()
		t.Fatal(err)
	}
	defer func() { stopFlood(); flood.Wait() }()
	// From the first drop on, the flood (about 100,000 SYNs/s here) keeps
	// greedy's bucket empty: each token is taken as it comes.
	w.waitFor("the flood to go over the rate", 10*time.Second, func() bool {
		return w.drops("greedy-0", "new_connections") > before
	})
	over := time.Now()
	w.waitFor("2 s of the flood at the rate", 20*time.Second, func() bool {
		return admitted(9000) >= 2*rate && w.drops("greedy-0", "new_connections") > before+3000
	})
	// A neighbour still connects, while the flood goes on.
	if err := connect("web1"); err != nil {
		t.Errorf("web1 could not connect during greedy's flood: %v", err)
	}
	stopFlood()
	flood.Wait()
	stopped := time.Now()
	// One more connection of greedy's: conntrack reports events in order,
	// so once it is seen every SYN of the flood that passed has been too.
	marks := admitted(9001)
	w.waitFor("greedy's connection after its flood", 10*time.Second, func() bool {
		if err := connect("greedy"); err != nil {
			t.Fatalf("greedy could not connect after its flood: %v", err)
		}
		return admitted(9001) > marks
	})
	elapsed := time.Since(start)
	n := admitted(9000)
	dropped := w.drops("greedy-0", "new_connections") - before
	// At most: a full bucket, then a token every 1/rate s, over a window
	// that holds the whole flood. The kernel's bucket holds burst packets
	// (nft_limit: tokens_max = burst/rate s; ping at 500/s through such a
	// meter passes 97 in 1.85 s: 5 + 50 x 1.85). At least: a token every
	// 1/rate s while the flood was over the rate, less 20% for pauses of
	// the flooder (2 shared cores) longer than the bucket's 100 ms, whose
	// tokens are lost.
	most := burst + int(rate*elapsed.Seconds())
	least := int(0.8 * rate * stopped.Sub(over).Seconds())
	t.Logf("%s of flood: %d new connections of greedy's admitted (%d to %d allowed), %d SYNs dropped for the rate",
		stopped.Sub(start).Round(10*time.Millisecond), n, least, most, dropped)
	if n > most || n < least {
		t.Errorf("greedy opened %d connections in %s of flood (%s over its rate), want %d to %d",
			n, stopped.Sub(start), stopped.Sub(over), least, most)
	}
	// The drops are the rate's: greedy never reached its cap.
	if c := w.counter("guest-connections-over-20-drop"); c != 0 {
		t.Errorf("the maxConnections rule dropped %d packets of greedy's, want 0", c)
	}
	if strings.Contains(events.String(), "rror") {
		t.Errorf("conntrack -E: %s", events.String())
	}

	scrape := w.mustExec("host", "curl", "-sf", "http://127.0.0.1:9477/metrics")
	series := `kvmnet_port_security_drops_total{interface="greedy-0",reason="new_connections"} `
	var got float64 = -1
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			got, _ = strconv.ParseFloat(v, 64)
		}
	}
	if got < float64(dropped) {
		t.Errorf("metric %s= %v, want at least %d", series, got, dropped)
	}
	if ports := w.mustKvmnet("get", "ports"); !regexpLine(ports, "greedy-0", "new_connections=") {
		t.Errorf("get ports shows no new_connections drops for greedy-0:\n%s", ports)
	}
}
