package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/kernel/feature"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

// qosHost is a host file with one guest, web1, whose tap web1-0 has
// qos.
func qosHost(qos string) string {
	return fmt.Sprintf(`networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0, qos: %s}]
`, qos)
}

// qosWorld is a host namespace with an uplink and a guest namespace
// behind web1-0 (a veth standing for the tap), addressed as qosHost has
// it; it returns both namespaces.
func qosWorld(t *testing.T) (host, guest string) {
	t.Helper()
	host, guest = egressNS(t), nstest.New(t)
	nstest.Veth(t, host, "web1-0", guest, "eth0")
	nstest.Run(t, guest, "ip", "link", "set", "eth0", "address", "52:54:00:00:00:10")
	nstest.Run(t, guest, "ip", "addr", "add", "192.168.100.10/24", "dev", "eth0")
	return host, guest
}

// showTc is what tc shows of web1-0: its qdiscs as "KIND HANDLE
// PARENT" and its classes as tc prints them (iproute2 6.1 has no JSON
// for htb classes).
func showTc(t *testing.T, ns string) (qdiscs, classes []string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(nstest.Run(t, ns, "tc", "qdisc", "show", "dev", "web1-0")), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			qdiscs = append(qdiscs, strings.Join(f[1:4], " "))
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(nstest.Run(t, ns, "tc", "class", "show", "dev", "web1-0")), "\n") {
		if line != "" {
			classes = append(classes, strings.TrimSpace(line))
		}
	}
	return qdiscs, classes
}

// TestQoSShapesTap: qos ingress on a port puts kvmnet's htb on its tap,
// as `tc -j` shows it; the same file again plans nothing; the qdisc
// deleted by hand is put back by a converge; destroy takes it away.
func TestQoSShapesTap(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	nstest.RequireRoot(t)
	ns, _ := qosWorld(t)
	e, _ := realEngine(t, ns)
	ctx := context.Background()
	doc := qosHost("{ingress: 50mbit}")
	cfg, err := model.Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, cfg, []byte(doc), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		qdiscs, classes := showTc(t, ns)
		// The kernel's default leaf (no qdisc shown) where fq_codel is
		// missing, fq_codel under the class where it is there.
		want := []string{"htb 6b76: root"}
		if feature.Check(plan.FeatureFqCodel) == nil {
			want = append(want, "fq_codel 6b77: parent")
		}
		if !cmp.Equal(qdiscs, want) {
			t.Errorf("%s: qdiscs %q, want %q", when, qdiscs, want)
		}
		wantClass := []string{"class htb 6b76:1 root prio 0 rate 50Mbit ceil 50Mbit burst 62500b cburst 62500b"}
		if feature.Check(plan.FeatureFqCodel) == nil {
			// tc names the leaf, and lists fq_codel's own flow classes
			// (their minor numbers are the flows', so only their kind
			// and parent are compared).
			wantClass = []string{"class htb 6b76:1 root leaf 6b77: prio 0 rate 50Mbit ceil 50Mbit burst 62500b cburst 62500b"}
			var flows []string
			for _, c := range classes[min(1, len(classes)):] {
				if f := strings.Fields(c); len(f) == 5 && f[1] == "fq_codel" && f[3] == "parent" && f[4] == "6b77:" {
					continue
				}
				flows = append(flows, c)
			}
			classes = append(classes[:min(1, len(classes))], flows...)
		}
		if !cmp.Equal(classes, wantClass) {
			t.Errorf("%s: classes %q, want %q", when, classes, wantClass)
		}
	}
	check("applied")
	if p, err := e.Plan(ctx, cfg); err != nil || !p.Empty() {
		t.Fatalf("planned again: %v\n%s", err, p)
	}
	nstest.Run(t, ns, "tc", "qdisc", "del", "dev", "web1-0", "root")
	p, err := e.Converge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), "tc qdisc replace dev web1-0 root handle 6b76: htb") {
		t.Errorf("converge after the qdisc was deleted:\n%s", p)
	}
	check("repaired")
	// Changed by hand: the class's rate.
	nstest.Run(t, ns, "tc", "class", "change", "dev", "web1-0", "parent", "6b76:", "classid", "6b76:1", "htb", "rate", "1mbit", "burst", "62500b")
	if _, err := e.Converge(ctx); err != nil {
		t.Fatal(err)
	}
	check("rate changed by hand and repaired")
	if _, err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if out := nstest.Run(t, ns, "tc", "qdisc", "show", "dev", "web1-0"); strings.Contains(out, "htb") {
		t.Errorf("destroy left kvmnet's qdisc:\n%s", out)
	}
}

// TestQoSRateToGuest measures TCP to the guest through the bridge with
// iperf3 (5 s, from the host namespace) shaped to 50 and 200 mbit.
func TestQoSRateToGuest(t *testing.T) {
	for _, tool := range []string{"nft", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " is not installed")
		}
	}
	nstest.RequireRoot(t)
	ns, guest := qosWorld(t)
	e, _ := realEngine(t, ns)
	ctx := context.Background()
	for _, rate := range []float64{50e6, 200e6} {
		doc := qosHost(fmt.Sprintf("{ingress: %.0fmbit}", rate/1e6))
		cfg, err := model.Parse("host.yaml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Apply(ctx, cfg, []byte(doc), ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		got := iperfToGuest(t, ns, guest)
		want := rate * goodput
		t.Logf("shaped to %.0f mbit: measured %.1f mbit of TCP payload (%.3f of the rate, %.3f of the payload it allows)", rate/1e6, got/1e6, got/rate, got/want)
		if got < want*(1-qosTolerance) || got > want*(1+qosTolerance) {
			t.Errorf("shaped to %.0f mbit: measured %.1f mbit of payload, want %.1f ±%.0f%%", rate/1e6, got/1e6, want/1e6, qosTolerance*100)
		}
	}
	if _, err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

// htb counts whole frames and iperf3 reports TCP payload: a full frame
// carries 1448 bytes of payload in 1514 (Ethernet 14, IPv4 20, TCP with
// timestamps 32), so the payload can reach 0.956 of the shaped rate.
// Measured here: 0.958 of the rate at 50 and at 200 mbit, that is within
// 0.3% of what the frames allow; qosTolerance leaves room for a loaded
// machine (2 shared cores) and is the issue's ±10%.
const (
	goodput      = 1448.0 / 1514
	qosTolerance = 0.10
)

// iperfToGuest runs an iperf3 server in guest, waits until it listens
// and returns the rate the receiver saw of 5 s of TCP from ns.
func iperfToGuest(t *testing.T, ns, guest string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := nstest.Command(ctx, guest, "iperf3", "-s", "-1", "-B", "192.168.100.10")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Wait()
	for !strings.Contains(nstest.Run(t, guest, "ss", "-Hltn", "sport", "= :5201"), "5201") {
		if ctx.Err() != nil {
			t.Fatal("iperf3 server not listening in time")
		}
	}
	out, err := nstest.Command(ctx, ns, "iperf3", "-c", "192.168.100.10", "-t", "5", "-J").Output()
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	return r.End.SumReceived.BitsPerSecond
}
