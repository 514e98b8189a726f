package metrics

import (
	"context"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvmnet/kvmnet/internal/kernel/ct"
)

// Collector names, the values of kvmnet_scrape_collector_success's label.
const (
	collectorInterfaces = "interfaces"
	collectorConntrack  = "conntrack"
	collectorNft        = "nft"
	collectorPortSec    = "port_security"
	collectorDHCP       = "dhcp"
	collectorForwards   = "forwards"
)

// source is one group of metrics read at scrape time.
type source struct {
	name  string
	descs []*prometheus.Desc
	// collect sends what it could read, then reports what it could not.
	collect func(ch chan<- prometheus.Metric) error
}

// kernelCollector reads the kernel and the daemon's callbacks at every
// scrape. Every metric it sends has a Desc it describes, so the registry
// checks them all.
type kernelCollector struct {
	sources []source
	success *prometheus.Desc
	log     *slog.Logger

	mu      sync.Mutex
	failing map[string]string // source name -> error text, while it fails
}

func newKernelCollector(opt Options, log *slog.Logger) *kernelCollector {
	c := &kernelCollector{
		success: prometheus.NewDesc(namespace+"_scrape_collector_success",
			"Whether the collector read its source (1) or failed (0) during this scrape; the failure is logged.",
			[]string{"collector"}, nil),
		log:     log,
		failing: map[string]string{},
	}
	if opt.Interfaces != nil {
		c.sources = append(c.sources, interfaceSource(opt.ProcRoot, opt.Interfaces))
	}
	c.sources = append(c.sources, conntrackSource(opt.ProcRoot))
	if opt.RuleDrops != nil {
		c.sources = append(c.sources, nftSource(opt.RuleDrops))
	}
	if opt.PortSecurityDrops != nil {
		c.sources = append(c.sources, portSecuritySource(opt.PortSecurityDrops))
	}
	if opt.Pools != nil {
		c.sources = append(c.sources, dhcpSource(opt.Pools))
	}
	if opt.Forwards != nil {
		c.sources = append(c.sources, forwardsSource(opt.Forwards))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.success
	for _, s := range c.sources {
		for _, d := range s.descs {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.sources {
		err := s.collect(ch)
		ok := 1.0
		if err != nil {
			ok = 0
		}
		ch <- prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, ok, s.name)
		c.report(s.name, err)
	}
}

// report logs a source's failure when it starts or changes, and its
// recovery, rather than at every scrape.
func (c *kernelCollector) report(name string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, wasFailing := c.failing[name]
	switch {
	case err != nil && (!wasFailing || prev != err.Error()):
		c.failing[name] = err.Error()
		c.log.Warn("metrics collector failing", "collector", name, "error", err)
	case err == nil && wasFailing:
		delete(c.failing, name)
		c.log.Info("metrics collector recovered", "collector", name)
	}
}

// ifaceStat is one per-interface counter and where it comes from.
type ifaceStat struct {
	name, help string
	value      func(netDevStats) uint64
}

var ifaceStats = []ifaceStat{
	{"receive_bytes_total", "Bytes received by the interface.", func(s netDevStats) uint64 { return s.RxBytes }},
	{"receive_packets_total", "Packets received by the interface.", func(s netDevStats) uint64 { return s.RxPackets }},
	{"receive_drops_total", "Received packets the interface dropped (rx_dropped + rx_missed_errors).", func(s netDevStats) uint64 { return s.RxDrops }},
	{"receive_errors_total", "Receive errors of the interface (rx_errors).", func(s netDevStats) uint64 { return s.RxErrors }},
	{"transmit_bytes_total", "Bytes transmitted by the interface.", func(s netDevStats) uint64 { return s.TxBytes }},
	{"transmit_packets_total", "Packets transmitted by the interface.", func(s netDevStats) uint64 { return s.TxPackets }},
	{"transmit_drops_total", "Packets to transmit the interface dropped (tx_dropped).", func(s netDevStats) uint64 { return s.TxDrops }},
	{"transmit_errors_total", "Transmit errors of the interface (tx_errors).", func(s netDevStats) uint64 { return s.TxErrors }},
}

// interfaceSource reads the counters of the listed interfaces from one read
// of /proc/net/dev: the same 64-bit counters netlink's IFLA_STATS64 and
// /sys/class/net/IF/statistics give, for all interfaces at once instead of
// eight files per interface (a host has a tap per VM interface).
func interfaceSource(procRoot string, list func() []Interface) source {
	labels := []string{"interface", "network", "vm"}
	descs := make([]*prometheus.Desc, len(ifaceStats))
	for i, st := range ifaceStats {
		descs[i] = prometheus.NewDesc(namespace+"_interface_"+st.name, st.help, labels, nil)
	}
	path := filepath.Join(procRoot, "net", "dev")
	return source{
		name:  collectorInterfaces,
		descs: descs,
		collect: func(ch chan<- prometheus.Metric) error {
			stats, err := readNetDev(path)
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, ifc := range list() {
				s, ok := stats[ifc.Name]
				if !ok || seen[ifc.Name] {
					// Not created yet, or listed twice: one series each.
					continue
				}
				seen[ifc.Name] = true
				for i, st := range ifaceStats {
					ch <- prometheus.MustNewConstMetric(descs[i], prometheus.CounterValue,
						float64(st.value(s)), ifc.Name, ifc.Network, ifc.VM)
				}
			}
			return nil
		},
	}
}

// conntrackStats are the columns of /proc/net/stat/nf_conntrack exported,
// summed over CPUs, and their metric names.
var conntrackStats = []struct{ column, name, help string }{
	{"drop", "drops_total", "Packets dropped because a new connection could not be tracked (table full and nothing could be evicted), summed over CPUs."},
	{"insert_failed", "insert_failed_total", "Connections that could not be inserted into the table (a clash with an entry already there), summed over CPUs."},
	{"early_drop", "early_drops_total", "Unconfirmed or unreplied entries evicted early to make room in a full table, summed over CPUs."},
}

// conntrackSource reads the connection tracking table's fill and its
// failure counters. Without the nf_conntrack module (no NAT network yet)
// the files do not exist and nothing is reported.
func conntrackSource(procRoot string) source {
	entries := prometheus.NewDesc(namespace+"_conntrack_entries",
		"Connections in the connection tracking table (net.netfilter.nf_conntrack_count).", nil, nil)
	limit := prometheus.NewDesc(namespace+"_conntrack_entries_limit",
		"Size of the connection tracking table (net.netfilter.nf_conntrack_max).", nil, nil)
	descs := []*prometheus.Desc{entries, limit}
	statDescs := make([]*prometheus.Desc, len(conntrackStats))
	for i, st := range conntrackStats {
		statDescs[i] = prometheus.NewDesc(namespace+"_conntrack_"+st.name, st.help, nil, nil)
	}
	descs = append(descs, statDescs...)
	return source{
		name:  collectorConntrack,
		descs: descs,
		collect: func(ch chan<- prometheus.Metric) error {
			st, err := ct.ReadStats(procRoot)
			if st.Loaded {
				ch <- prometheus.MustNewConstMetric(entries, prometheus.GaugeValue, float64(st.Count))
				ch <- prometheus.MustNewConstMetric(limit, prometheus.GaugeValue, float64(st.Max))
			}
			for i, s := range conntrackStats {
				if v, ok := st.PerCPU[s.column]; ok {
					ch <- prometheus.MustNewConstMetric(statDescs[i], prometheus.CounterValue, float64(v))
				}
			}
			return err
		},
	}
}

// nftSource exports the packet counters of the drop rules of table inet
// kvmnet by rule comment.
func nftSource(drops RuleDropsFunc) source {
	desc := prometheus.NewDesc(namespace+"_nft_drop_packets_total",
		"Packets dropped by a rule of nftables table inet kvmnet, by the rule's comment (e.g. into-nat-drop). Resets when the table is rebuilt.",
		[]string{"rule"}, nil)
	return source{
		name:  collectorNft,
		descs: []*prometheus.Desc{desc},
		collect: func(ch chan<- prometheus.Metric) error {
			ctx, cancel := context.WithTimeout(context.Background(), callbackTimeout)
			defer cancel()
			m, err := drops(ctx)
			if err != nil {
				return err
			}
			for _, rule := range sortedKeys(m) {
				ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(m[rule]), rule)
			}
			return nil
		},
	}
}

// portSecuritySource exports port security's drop counters by tap and
// reason. Like the rule counters, they are the kernel's: they restart from
// zero when the bridge table is rebuilt, which Prometheus reads as a
// counter reset.
func portSecuritySource(drops PortSecurityDropsFunc) source {
	desc := prometheus.NewDesc(namespace+"_port_security_drops_total",
		"Frames from a VM's tap dropped by port security, by tap and reason (mac, arp, ip, ipv6, dhcp_server, ra, storm, vlan, new_connections). Resets when the table is rebuilt.",
		[]string{"interface", "reason"}, nil)
	return source{
		name:  collectorPortSec,
		descs: []*prometheus.Desc{desc},
		collect: func(ch chan<- prometheus.Metric) error {
			ctx, cancel := context.WithTimeout(context.Background(), callbackTimeout)
			defer cancel()
			m, err := drops(ctx)
			if err != nil {
				return err
			}
			for _, tap := range sortedKeys(m) {
				for _, reason := range sortedKeys(m[tap]) {
					ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(m[tap][reason]), tap, reason)
				}
			}
			return nil
		},
	}
}

func dhcpSource(pools func() []Pool) source {
	used := prometheus.NewDesc(namespace+"_dhcp_leases_used",
		"Addresses of the network's DHCP pool leased, offered or declined now.", []string{"network"}, nil)
	free := prometheus.NewDesc(namespace+"_dhcp_leases_free",
		"Addresses of the network's DHCP pool that can be handed out now.", []string{"network"}, nil)
	return source{
		name:  collectorDHCP,
		descs: []*prometheus.Desc{used, free},
		collect: func(ch chan<- prometheus.Metric) error {
			seen := map[string]bool{}
			for _, p := range pools() {
				if seen[p.Network] {
					continue
				}
				seen[p.Network] = true
				ch <- prometheus.MustNewConstMetric(used, prometheus.GaugeValue, float64(p.Used), p.Network)
				ch <- prometheus.MustNewConstMetric(free, prometheus.GaugeValue, float64(p.Free), p.Network)
			}
			return nil
		},
	}
}

func forwardsSource(forwards func() map[string]int) source {
	desc := prometheus.NewDesc(namespace+"_forwards",
		"Port forwards configured into the network.", []string{"network"}, nil)
	return source{
		name:  collectorForwards,
		descs: []*prometheus.Desc{desc},
		collect: func(ch chan<- prometheus.Metric) error {
			m := forwards()
			for _, n := range sortedKeys(m) {
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(m[n]), n)
			}
			return nil
		},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
