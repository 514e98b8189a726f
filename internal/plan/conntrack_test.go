package plan_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/testutil/golden"
)

// ctHost is LANHost with nf_conntrack loaded at the kernel's defaults
// of a 24 GiB machine, every conntrack sysctl writable (the initial
// namespace).
func ctHost() *fake.Kernel {
	k := fake.LANHost()
	k.Edit(func(o *plan.Observed) {
		for _, key := range plan.ConntrackSysctls() {
			o.Sysctls[key] = "60"
		}
		o.Sysctls[plan.SysctlConntrackMax] = "262144"
		o.Sysctls[plan.SysctlConntrackBuckets] = "262144"
		o.Sysctls[plan.ConntrackTimeoutSysctl("tcpEstablished")] = "432000"
		o.Sysctls[plan.ConntrackTimeoutSysctl("udp")] = "30"
		o.MemTotal = 24 << 30
	})
	return k
}

func ctFile(conntrack string) string {
	s := file([]string{net(dev, "")}, net(web1, ", security: {maxConnections: 200000}"))
	if conntrack != "" {
		s = "host:\n  conntrack: " + conntrack + "\n" + s
	}
	return s
}

// TestConntrackStates: conntrack settings are set, changed, and given
// back when they leave the file, each plan once and then empty.
func TestConntrackStates(t *testing.T) {
	k := ctHost()
	before := k.Dump()
	orig := map[string]string{}
	hooks := plan.Hooks{BeforeSysctl: func(key, prev string) error {
		if _, ok := orig[key]; !ok {
			orig[key] = prev
		}
		return nil
	}}
	states := []struct{ name, doc string }{
		{"auto", ctFile("{max: auto, buckets: auto, timeouts: {udp: 20s}}")},
		{"numbers", ctFile("{max: 300000, timeouts: {tcpEstablished: 1h, udpStream: 2m}}")},
		{"removed", ctFile("")},
	}
	for i, s := range states {
		p := planApply(t, k, s.name, s.doc, orig, hooks)
		golden.Check(t, filepath.Join("testdata", "states", "conntrack", fmt.Sprintf("%d-%s.plan", i+1, s.name)), p.String())
		if again := planApply(t, k, s.name, s.doc, orig, hooks); len(again.Actions) != 0 {
			t.Fatalf("%s: planned again after its steps were done, the plan is not empty:\n%s", s.name, again)
		}
	}
	// Only ip_forward, which the NAT network still needs, differs.
	k.Edit(func(o *plan.Observed) { o.Sysctls[plan.SysctlIPForward] = "0" })
	if after := dumpWithout(k); after != dumpWithoutText(before) {
		t.Errorf("conntrack sysctls not given back:\n%s\nwant\n%s", after, dumpWithoutText(before))
	}
}

// dumpWithout keeps the sysctl lines of a dump: the links and tables the
// network made are not what this test is about.
func dumpWithout(k *fake.Kernel) string { return dumpWithoutText(k.Dump()) }

func dumpWithoutText(d string) string {
	var out strings.Builder
	for line := range strings.Lines(d) {
		if strings.HasPrefix(line, "sysctl ") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// TestConntrackRefused: what the kernel would not let kvmnet write where
// it runs, and a conntrack module not loaded, are refused at the key.
func TestConntrackRefused(t *testing.T) {
	for _, tc := range []struct {
		name, conntrack string
		edit            func(o *plan.Observed)
		want            string
	}{{
		name:      "max read-only in a namespace",
		conntrack: "{max: 300000, timeouts: {udp: 20s}}",
		edit: func(o *plan.Observed) {
			o.ReadOnly = map[string]bool{plan.SysctlConntrackMax: true, plan.SysctlConntrackBuckets: true}
		},
		want: "host.yaml:2:20: host.conntrack.max: net.netfilter.nf_conntrack_max is read-only where kvmnet runs: this kernel lets only the machine's initial network namespace change it (it is global); remove the key, or run kvmnet in the initial namespace and set it there",
	}, {
		name:      "module not loaded",
		conntrack: "{timeouts: {udp: 20s}}",
		edit: func(o *plan.Observed) {
			for _, k := range plan.ConntrackSysctls() {
				delete(o.Sysctls, k)
			}
		},
		want: "host.yaml:2:14: host.conntrack: net.netfilter.nf_conntrack_tcp_timeout_established does not exist here: the nf_conntrack module is not loaded; load it (modprobe nf_conntrack) and plan again",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			k := ctHost()
			k.Edit(tc.edit)
			cfg, err := model.ParseStored("host.yaml", []byte(ctFile(tc.conntrack)))
			if err != nil {
				t.Fatal(err)
			}
			obs, err := k.Observe(context.Background(), plan.ObserveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = plan.Build(cfg, obs, plan.Options{})
			if err == nil || err.Error() != tc.want {
				t.Errorf("error:\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

// TestSizeConntrack: max: auto for small and large hosts and guest counts.
func TestSizeConntrack(t *testing.T) {
	guests := func(n, maxConn int) *model.Config {
		c := &model.Config{Networks: []model.Network{{Name: "dev", Mode: model.ModeNAT}}}
		for i := range n {
			c.VMs = append(c.VMs, model.VM{Name: fmt.Sprint("g", i), Interfaces: []model.Interface{{Network: "dev", Security: model.Security{MaxConnections: maxConn}}}})
		}
		return c
	}
	const gib = 1 << 30
	for _, tc := range []struct {
		name string
		cfg  *model.Config
		mem  uint64
		want int
	}{
		{"few guests: the kernel's own size", guests(3, 0), 24 * gib, 262144},
		{"100 guests at 4096", guests(100, 4096), 24 * gib, 950272},      // 2 × (409,600 + 65,536)
		{"capped by memory", guests(1000, 100000), 24 * gib, 2108131},    // 24 GiB / 32 / 382
		{"small host: capped by memory", guests(10, 0), 2 * gib, 175677}, // 2 × (40,960 + 65,536) = 212,992 > 2 GiB/32/382
		{"tiny host", guests(10, 0), 512 << 20, 43919},                   // 512 MiB/32/382, above the kernel's 4096
		{"bridged guests do not count", &model.Config{}, 24 * gib, 262144},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plan.SizeConntrack(tc.cfg, tc.mem)
			if s.Max != tc.want {
				t.Errorf("max %d, want %d (%s)", s.Max, tc.want, s)
			}
		})
	}
}
