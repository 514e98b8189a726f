package doctor_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

const hostFile = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0, dhcp: {range: 192.168.100.100-192.168.100.103}}
vms:
  - name: web1
    interfaces: [{network: dev, mac: "52:54:00:00:00:10", ip: 192.168.100.10, tap: web1-0}]
  - name: db1
    interfaces: [{network: dev, mac: "52:54:00:00:00:11", tap: db1-0}]
`

// healthy is the fake tier's LAN host with hostFile applied (every step
// of its plan done on the kernel in memory), a running daemon and a
// table with room.
func healthy(t *testing.T) (*fake.Kernel, *model.Config) {
	t.Helper()
	cfg, err := model.Parse("host.yaml", []byte(hostFile))
	if err != nil {
		t.Fatal(err)
	}
	k := fake.LANHost()
	obs, err := k.Observe(context.Background(), plan.ObserveOptions{Hosts: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(cfg, obs, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range p.Actions {
		if _, err := a.Do(context.Background(), k, plan.Hooks{}); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	k.Conntrack = doctor.Conntrack{Loaded: true, Count: 1200, Max: 262144, PerCPU: map[string]uint64{"found": 10}}
	return k, cfg
}

func run(t *testing.T, k *fake.Kernel, cfg *model.Config, leases []store.Lease, daemon bool) doctor.Report {
	t.Helper()
	f, err := doctor.Gather(context.Background(), k, cfg, leases, daemon)
	if err != nil {
		t.Fatal(err)
	}
	return doctor.Run(f)
}

// TestHealthy: a host as kvmnet leaves it, with its daemon, has nothing
// worse than OK.
func TestHealthy(t *testing.T) {
	k, cfg := healthy(t)
	r := run(t, k, cfg, nil, true)
	if r.Worst != doctor.OK || r.Worst.ExitCode() != 0 {
		t.Errorf("worst %s, want ok:\n%s", r.Worst, r)
	}
}

// TestPlanted: each problem planted on a healthy host is found, with its
// severity, its evidence and a fix, and sets the exit code.
func TestPlanted(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	lease := func(mac, ip string) store.Lease {
		return store.Lease{Network: "dev", MAC: mac, IP: netip.MustParseAddr(ip), Expiry: exp}
	}
	for _, tc := range []struct {
		name      string
		plant     func(k *fake.Kernel)
		leases    []store.Lease
		noDaemon  bool
		check     string
		subject   string
		sev       doctor.Severity
		inSummary string
	}{
		{name: "ip_forward off", plant: func(k *fake.Kernel) { k.Edit(func(o *plan.Observed) { o.Sysctls[plan.SysctlIPForward] = "0" }) },
			check: "ip-forward", sev: doctor.Critical, inSummary: "forwarding is off"},
		{name: "docker's forward drop", plant: func(k *fake.Kernel) {
			k.Foreign = []doctor.Chain{{Family: "ip", Table: "filter", Name: "FORWARD", Type: "filter", Hook: "forward", Policy: "drop"}}
		}, check: "foreign-forward-drop", subject: "ip filter FORWARD", sev: doctor.Critical, inSummary: "kv-dev"},
		{name: "forward drop that accepts the bridge", plant: func(k *fake.Kernel) {
			k.Foreign = []doctor.Chain{{Family: "inet", Table: "firewalld", Name: "filter_FORWARD", Type: "filter", Hook: "forward", Policy: "drop", Mentions: []string{"kv-dev"}}}
		}, check: "foreign-forward-drop", subject: "inet firewalld filter_FORWARD", sev: doctor.Info},
		{name: "libvirt masquerades the subnet", plant: func(k *fake.Kernel) {
			k.Foreign = []doctor.Chain{{Family: "ip", Table: "libvirt_network", Name: "guest_nat", Type: "nat", Hook: "postrouting", Masquerades: []string{"192.168.100.0/24"}}}
		}, check: "foreign-masquerade", subject: "ip libvirt_network guest_nat", sev: doctor.Warning, inSummary: "192.168.100.0/24"},
		{name: "br_netfilter on", plant: func(k *fake.Kernel) {
			k.Edit(func(o *plan.Observed) {
				for _, s := range plan.BridgeNFSysctls {
					o.Sysctls[s] = "1"
				}
			})
		}, check: "br-netfilter", sev: doctor.Warning},
		{name: "a kvmnet bridge's own switch on", plant: func(k *fake.Kernel) {
			k.Edit(func(o *plan.Observed) { l := o.Links["kv-dev"]; l.BridgeNF = "on"; o.Links["kv-dev"] = l })
		}, check: "br-netfilter", subject: "kv-dev", sev: doctor.Warning, inSummary: "its own nf_call_iptables"},
		{name: "tap missing", plant: func(k *fake.Kernel) { k.Edit(func(o *plan.Observed) { delete(o.Links, "db1-0") }) },
			check: "tap", subject: "db1-0", sev: doctor.Warning, inSummary: "is missing"},
		{name: "tap MTU lower than the bridge", plant: func(k *fake.Kernel) {
			k.Edit(func(o *plan.Observed) { l := o.Links["web1-0"]; l.MTU = 1400; o.Links["web1-0"] = l })
		}, check: "mtu", subject: "web1-0", sev: doctor.Warning, inSummary: "1400"},
		{name: "conntrack nearly full", plant: func(k *fake.Kernel) { k.Conntrack.Count = 255000 },
			check: "conntrack-headroom", sev: doctor.Critical, inSummary: "97% full"},
		{name: "conntrack insert failures", plant: func(k *fake.Kernel) { k.Conntrack.PerCPU["insert_failed"] = 7 },
			check: "conntrack-failures", sev: doctor.Warning},
		{name: "5-day established timeout", plant: func(k *fake.Kernel) {
			k.Edit(func(o *plan.Observed) { o.Sysctls[plan.ConntrackTimeoutSysctl("tcpEstablished")] = "432000" })
		}, check: "conntrack-timeouts", sev: doctor.Info, inSummary: "120h0m0s"},
		{name: "pool exhausted", leases: []store.Lease{lease("52:54:00:00:00:11", "192.168.100.100"), lease("52:54:00:00:00:21", "192.168.100.101"),
			lease("52:54:00:00:00:22", "192.168.100.102"), lease("52:54:00:00:00:23", "192.168.100.103")},
			check: "dhcp-pool", subject: "dev", sev: doctor.Critical, inSummary: "exhausted"},
		{name: "lease of a guest that is gone", leases: []store.Lease{lease("52:54:00:00:00:99", "192.168.100.100")},
			check: "stale-lease", subject: "dev", sev: doctor.Info, inSummary: "52:54:00:00:00:99"},
		{name: "flowtables missing", plant: func(k *fake.Kernel) { k.Lacks = map[plan.Feature]string{plan.FeatureFlowtable: "no such file"} },
			check: "kernel-feature", subject: string(plan.FeatureFlowtable), sev: doctor.Info},
		{name: "no vhost-net", plant: func(k *fake.Kernel) {
			k.NoDevices = map[string]string{doctor.VhostNetDevice: "open /dev/vhost-net: no such file or directory"}
		},
			check: "kernel-feature", subject: "vhost-net", sev: doctor.Info},
		{name: "daemon not running", noDaemon: true, check: "daemon", sev: doctor.Critical, inSummary: "no DHCP lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, cfg := healthy(t)
			if tc.plant != nil {
				tc.plant(k)
			}
			r := run(t, k, cfg, tc.leases, !tc.noDaemon)
			var found *doctor.Finding
			for i, x := range r.Findings {
				if x.Check == tc.check && x.Subject == tc.subject && x.Severity != doctor.OK {
					found = &r.Findings[i]
				}
			}
			if found == nil {
				t.Fatalf("no %s finding on %q:\n%s", tc.check, tc.subject, r)
			}
			if found.Severity != tc.sev || !strings.Contains(found.Summary, tc.inSummary) || len(found.Evidence) == 0 || (found.Fix == "" && tc.sev > doctor.Info) {
				t.Errorf("finding %+v, want severity %s, summary with %q, evidence and a fix", *found, tc.sev, tc.inSummary)
			}
			if r.Worst != tc.sev {
				t.Errorf("worst %s, want %s (only the planted problem):\n%s", r.Worst, tc.sev, r)
			}
			if want := tc.sev.ExitCode(); r.Worst.ExitCode() != want {
				t.Errorf("exit code %d, want %d", r.Worst.ExitCode(), want)
			}
		})
	}
}

// TestNothingApplied: without a desired state the host checks still run.
func TestNothingApplied(t *testing.T) {
	k := fake.LANHost()
	r := run(t, k, nil, nil, false)
	if r.Worst != doctor.Info || !strings.Contains(r.String(), "INFO     desired-state: kvmnet manages no network here yet") {
		t.Errorf("worst %s, want info for the missing desired state:\n%s", r.Worst, r)
	}
}
