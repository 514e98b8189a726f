// Package metrics is kvmnet's Prometheus endpoint: the daemon creates one
// Metrics with New, hands it callbacks for what it knows (which interfaces
// are kvmnet's, DHCP pool use, forwards, the nftables drop counters), calls
// its observer methods as applies, reconciles and repairs happen, and serves
// Handler on --metrics-addr.
//
// Kernel counters (interface statistics, conntrack) are read from /proc at
// every scrape, in the network namespace of the process, which is the one
// kvmnet manages (`kvmnet --netns NAME daemon` re-executes itself inside
// NAME). Nothing is cached between scrapes, and every metric lives in the
// Metrics' own registry, never in the process-wide default one.
//
// Metric names (every kvmnet_ metric is documented in docs/metrics.md):
//
//	kvmnet_interface_{receive,transmit}_{bytes,packets,drops,errors}_total{interface,network,vm}
//	kvmnet_conntrack_entries, kvmnet_conntrack_entries_limit
//	kvmnet_conntrack_{drops,insert_failed,early_drops}_total
//	kvmnet_nft_drop_packets_total{rule}
//	kvmnet_port_security_drops_total{interface,reason}
//	kvmnet_dhcp_leases_used{network}, kvmnet_dhcp_leases_free{network}
//	kvmnet_forwards{network}
//	kvmnet_apply_duration_seconds{result}, kvmnet_reconcile_duration_seconds{result}
//	kvmnet_drift_repairs_total{kind}
//	kvmnet_scrape_collector_success{collector}
//
// plus the client library's go_* and process_* metrics of the daemon itself.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric kvmnet defines.
const namespace = "kvmnet"

// Interface is one network interface whose counters are exported.
type Interface struct {
	// Name is the kernel's name, e.g. "kv-dev" or "web1-0".
	Name string
	// Network is the kvmnet network the interface belongs to ("dev"),
	// empty for interfaces of no network (an egress uplink).
	Network string
	// VM is the guest behind a tap ("web1"), empty for bridges and uplinks.
	VM string
}

// Pool is the use of one NAT network's DHCP address pool.
type Pool struct {
	// Network is the kvmnet network name.
	Network string
	// Used counts the pool's addresses leased, offered or declined now.
	Used int
	// Free counts the pool's addresses that can be handed out now.
	Free int
}

// PortSecurityDropsFunc returns the frames port security dropped, by tap
// and reason, e.g. {"web1-0": {"ip": 3, "mac": 1}}: the kernel's counters
// (the daemon implements it with the nft backend's DropCounters, which
// reads the drop_REASON sets of table bridge kvmnet). Taps without drops may
// be left out. ctx carries the scrape's deadline.
type PortSecurityDropsFunc func(ctx context.Context) (map[string]map[string]uint64, error)

// RuleDropsFunc returns the packet counts of the drop rules of table inet
// kvmnet, keyed by rule comment, e.g. {"into-nat-drop": 2}. The daemon
// implements it by running `nft -j list table inet kvmnet` and passing the
// output to ParseDropCounters. It returns an empty map, not an error, when
// the table does not exist. ctx carries the scrape's deadline.
type RuleDropsFunc func(ctx context.Context) (map[string]uint64, error)

// Options are what New needs. Every callback is optional: a nil callback
// leaves its metrics out. Callbacks run at every scrape, possibly
// concurrently with each other and with the daemon's work, so they must be
// safe for concurrent use and must not wait for an apply to finish.
type Options struct {
	// Interfaces returns the interfaces to report: kvmnet's bridges, the
	// taps of configured VM interfaces, the egress uplinks. Interfaces
	// listed but absent from the kernel (a tap libvirt has not created
	// yet) are left out of the scrape.
	Interfaces func() []Interface
	// RuleDrops returns the nftables drop counters; see RuleDropsFunc.
	RuleDrops RuleDropsFunc
	// PortSecurityDrops returns port security's drop counters; see
	// PortSecurityDropsFunc.
	PortSecurityDrops PortSecurityDropsFunc
	// Pools returns the DHCP pool use of every NAT network with DHCP on.
	Pools func() []Pool
	// Forwards returns the number of configured port forwards per network
	// name; networks without forwards may be left out.
	Forwards func() map[string]int
	// ProcRoot is where procfs is mounted, "/proc" when empty. Tests point
	// it at a directory of fixtures.
	ProcRoot string
	// Log receives collection failures (once when a collector starts
	// failing, once when it recovers) and errors serving /metrics. Nil
	// discards them.
	Log *slog.Logger
}

// callbackTimeout bounds one RuleDrops or PortSecurityDrops call, so a hung
// nft or netlink dump cannot hold a scrape forever.
const callbackTimeout = 5 * time.Second

// durationBuckets cover applies and reconcile passes: from a pass that
// finds nothing to do (a few milliseconds: one netlink dump, one nft list)
// to an apply creating hundreds of links (seconds).
var durationBuckets = prometheus.ExponentialBuckets(0.002, 2, 14) // 2ms .. 16.4s

// Result label values of the duration histograms.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// Metrics is kvmnet's registry and the metrics the daemon updates. Its
// methods are safe for concurrent use.
type Metrics struct {
	reg               *prometheus.Registry
	log               *slog.Logger
	applyDuration     *prometheus.HistogramVec
	reconcileDuration *prometheus.HistogramVec
	driftRepairs      *prometheus.CounterVec
	dhcpIgnored       *prometheus.CounterVec
}

// New creates the registry with kvmnet's collectors over opt, the
// daemon-fed metrics, and the Go runtime and process collectors.
func New(opt Options) *Metrics {
	if opt.ProcRoot == "" {
		opt.ProcRoot = "/proc"
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: log,
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "apply_duration_seconds",
			Help:      "Time taken by applies of a desired state (kvmnet apply, rollback, the daemon's start), from observation to the last kernel change; result is ok or error.",
			Buckets:   durationBuckets,
		}, []string{"result"}),
		reconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "reconcile_duration_seconds",
			Help:      "Time taken by reconcile passes (observe, plan, repair), whether or not they found drift; result is ok or error.",
			Buckets:   durationBuckets,
		}, []string{"result"}),
		driftRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "drift_repairs_total",
			Help:      "Repairs of drift the reconcile loop made, by kind of repair action.",
		}, []string{"kind"}),
		dhcpIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "dhcp_ignored_total",
			Help:      "DHCP client messages the server refused to act on, by network, message type (DECLINE, RELEASE, ...) and reason: source (not from the subnet), chaddr (names a MAC other than the frame's source), other-port (a MAC of another port), relay, decline-rate, not-held (an address the client does not hold).",
		}, []string{"network", "type", "reason"}),
	}
	for _, r := range []string{ResultOK, ResultError} {
		// Series exist from the start, so rate() works from the first apply.
		m.applyDuration.WithLabelValues(r)
		m.reconcileDuration.WithLabelValues(r)
	}
	m.reg.MustRegister(
		m.applyDuration, m.reconcileDuration, m.driftRepairs, m.dhcpIgnored,
		newKernelCollector(opt, log),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry, for tests and for registering more
// collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveApply records the duration of one apply; err is its outcome.
func (m *Metrics) ObserveApply(d time.Duration, err error) {
	m.applyDuration.WithLabelValues(result(err)).Observe(d.Seconds())
}

// ObserveReconcile records the duration of one reconcile pass; err is its
// outcome.
func (m *Metrics) ObserveReconcile(d time.Duration, err error) {
	m.reconcileDuration.WithLabelValues(result(err)).Observe(d.Seconds())
}

// DHCPIgnored counts one DHCP client message of type typ that the server
// of network refused, for reason (see dhcp.Ignored).
func (m *Metrics) DHCPIgnored(network, typ, reason string) {
	m.dhcpIgnored.WithLabelValues(network, typ, reason).Inc()
}

func result(err error) string {
	if err != nil {
		return ResultError
	}
	return ResultOK
}

// DriftRepaired counts one repair of drift. kind is a short fixed word,
// such as the plan action that repaired it ("add-bridge", "set-master",
// "add-addr", "nft", "sysctl"): never a name of a network or VM, which
// would make one series per object.
func (m *Metrics) DriftRepaired(kind string) {
	m.driftRepairs.WithLabelValues(kind).Inc()
}

// Handler returns the http.Handler that serves the registry in the
// Prometheus exposition formats. A collector that fails does not fail the
// scrape: the other metrics are served and kvmnet_scrape_collector_success
// says which one failed.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrintln{m.log},
		ErrorHandling: promhttp.ContinueOnError,
		// Counts its own failures in promhttp_metric_handler_errors_total.
		Registry: m.reg,
		// Scrapes read /proc and run nft; two at once are plenty.
		MaxRequestsInFlight: 2,
		Timeout:             30 * time.Second,
	})
}

// Serve listens on addr (host:port) and serves Handler on /metrics until
// ctx is done. A listen error is returned at once; when ctx ends, Serve
// shuts the server down and returns nil.
func (m *Metrics) Serve(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for metrics on %q: %w", addr, err)
	}
	return m.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener the caller opened, e.g. one inside
// a particular network namespace or on port 0 in tests. It closes ln.
func (m *Metrics) ServeListener(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown lets scrapes in flight finish; Close cuts what is left.
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
	}
	return nil
}

// slogPrintln adapts a slog.Logger to promhttp's Println logger.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) {
	l.log.Warn("serving metrics", "error", fmt.Sprint(v...))
}
