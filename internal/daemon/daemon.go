// Package daemon is the long-lived part of kvmnet: it serves DHCP and DNS
// for the applied NAT networks, adopts taps when they appear, re-applies the
// desired state periodically, and serves the API on a unix socket.
// Starting or stopping it never flushes or rebuilds anything that is right:
// it only applies the plan, and the plan of a kernel that matches is empty.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/dhcp"
	"github.com/kvmnet/kvmnet/internal/dns"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/kernel/link"
	"github.com/kvmnet/kvmnet/internal/kernel/snoop"
	"github.com/kvmnet/kvmnet/internal/metrics"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
	"github.com/kvmnet/kvmnet/internal/store"
)

// dhcpServer is a running DHCP server and the bridge it is bound to.
type dhcpServer struct {
	*dhcp.Server
	iface string
}

// dnsServer is a running DNS server, the address it listens on and the
// bridge its sockets are bound to.
type dnsServer struct {
	*dns.Server
	listen netip.Addr
	iface  string
}

// Options configure a daemon.
type Options struct {
	Engine *engine.Engine
	// Socket is the unix socket of the API.
	Socket string
	// SocketGroup may use the socket too (mode 0660); "" keeps it
	// root-only.
	SocketGroup string
	// Resync is the period of the safety pass (default 30s).
	Resync time.Duration
	// Upstreams override the DNS forwarder's upstream resolvers
	// (default: the nameservers of /etc/resolv.conf).
	Upstreams []string
	// APIAddr, when set, serves the API over TCP too, with mutual TLS only:
	// TLSCert and TLSKey are the server's, and clients must present a
	// certificate signed by a CA in TLSClientCA. There is no
	// unauthenticated TCP mode.
	APIAddr, TLSCert, TLSKey, TLSClientCA string
	// MetricsAddr serves Prometheus metrics on /metrics when set (e.g.
	// 127.0.0.1:9477); off by default.
	MetricsAddr string
	// Events are the kernel's event sources in the daemon's namespace.
	Events Events
	// RuleDrops and PortSecurityDrops read kvmnet's drop counters for
	// the metrics (nil: those metrics are left out).
	RuleDrops         metrics.RuleDropsFunc
	PortSecurityDrops metrics.PortSecurityDropsFunc
	Log               *slog.Logger
}

// Events are what the daemon hears from the kernel besides the engine's
// observations; kernel.Host is one, bound to its namespace.
type Events interface {
	// WatchLinks reports link and address changes.
	WatchLinks(done <-chan struct{}) (<-chan link.Event, error)
	// WatchRuleset reports deletions in the nftables ruleset.
	WatchRuleset(done <-chan struct{}) (<-chan struct{}, error)
	// ReadSysctl reads one sysctl.
	ReadSysctl(key string) (string, error)
	// Snoop watches the LAN's DHCP replies to the ports want accepts.
	Snoop(ctx context.Context, want func(port string) bool, out chan<- snoop.Reply) error
}

// Daemon serves one namespace.
type Daemon struct {
	opt Options
	log *slog.Logger

	// want is the desired state the daemon serves, with the lookups the
	// event loop, the DHCP servers and the snooper make in it; it is
	// replaced whole (setConfig), never changed, so reading it takes no
	// lock.
	want atomic.Pointer[wanted]
	// sysctls are the values the last reconcile's plan wanted
	// (plan.Plan.Sysctls: ip_forward, host: conntrack:), read again every
	// second for drift.
	sysctls atomic.Pointer[map[string]string]

	// mu guards the services: the DHCP and DNS servers, the host's DHCP
	// clients, the snooper.
	mu   sync.Mutex
	dhcp map[string]*dhcpServer // by network
	dns  map[string]*dnsServer  // by network
	// hostDHCP are the host's DHCP clients on bridged networks' bridges.
	hostDHCP map[string]*hostClient // by network
	// snooping is set once the snooper runs.
	snooping bool
	kick     chan struct{}
	// bind carries requests of DHCP servers to bind a new lease to its
	// port before the ACK goes out; the main loop closes the channel it
	// is sent once done.
	bind chan chan struct{}

	metrics *metrics.Metrics
	// ctx is Run's: timers the daemon holds (apply --confirm) end with it.
	ctx context.Context
	// convergeReq holds the one converge waiting to run.
	convergeReq chan string
}

// onLinks adopts the wanted taps among a batch of link events at once,
// then asks for one converge for all of them.
func (d *Daemon) onLinks(ctx context.Context, batch []link.Event) {
	why := ""
	for _, ev := range batch {
		switch {
		case d.wanted().taps[ev.Link]:
			// The new tap first, then everything else.
			if done, err := d.opt.Engine.AttachPort(ctx, ev.Link); err != nil {
				d.log.Warn("adopting a tap failed; the converge tries again", "tap", ev.Link, "err", err)
			} else if done {
				d.log.Info("adopted tap", "tap", ev.Link)
			}
			why = "link " + ev.Link
		case ev.Addr && why == "":
			// Our own gateway addresses trigger this too; converging
			// is then a no-op.
			why = "address"
		}
	}
	if why != "" {
		d.requestConverge(why)
	}
}

// requestConverge asks for a converge. Requests made while one waits are
// one: the converge reads the desired state and the kernel when it runs.
func (d *Daemon) requestConverge(why string) {
	select {
	case d.convergeReq <- why:
	default:
	}
}

// bindWait bounds how long an ACK waits for its lease to be bound. It also
// breaks the wait should the main loop be the one closing that server.
const bindWait = 500 * time.Millisecond

// bindLease asks the main loop to bind a new lease to the port of mac and
// waits for it. Only guests of the desired state with spoofguard need it:
// anyone else's ACK goes out at once.
func (d *Daemon) bindLease(mac string) {
	if !d.wanted().protected[mac] {
		return
	}
	done := make(chan struct{})
	select {
	case d.bind <- done:
	case <-time.After(bindWait):
		return
	}
	select {
	case <-done:
	case <-time.After(bindWait):
	}
}

// Run serves until ctx is done.
func Run(ctx context.Context, opt Options) error {
	if opt.Resync == 0 {
		opt.Resync = 30 * time.Second
	}
	d := &Daemon{opt: opt, log: opt.Log, dhcp: map[string]*dhcpServer{}, dns: map[string]*dnsServer{}, hostDHCP: map[string]*hostClient{}, kick: make(chan struct{}, 1), bind: make(chan chan struct{}), ctx: ctx}
	// A store that lost the desired state of what the kernel holds must
	// not be converged: the first converge would remove every network.
	if err := opt.Engine.CheckState(ctx); err != nil {
		return fmt.Errorf("not starting: %w", err)
	}
	ln, err := api.Listen(opt.Socket, opt.SocketGroup)
	if err != nil {
		return err
	}
	// Adopt what an apply without daemon left: converge to the stored
	// desired state (an empty plan when the kernel matches).
	cfg, rev, err := opt.Engine.Desired()
	if err != nil {
		ln.Close()
		return err
	}
	d.log.Info("starting", "socket", opt.Socket, "revision", rev, "networks", len(cfg.Networks))
	d.metrics = metrics.New(metrics.Options{
		Interfaces: d.metricInterfaces, RuleDrops: opt.RuleDrops, PortSecurityDrops: opt.PortSecurityDrops,
		Pools: d.metricPools, Forwards: d.metricForwards, Log: d.log,
	})
	if opt.MetricsAddr != "" {
		go func() {
			if err := d.metrics.Serve(ctx, opt.MetricsAddr); err != nil {
				d.log.Error("metrics server stopped", "addr", opt.MetricsAddr, "err", err)
			}
		}()
	}
	d.converge(ctx, "start")
	// Later converges run on their own goroutine, so the loop below
	// stays free for what must not wait behind one (a new tap).
	d.convergeReq = make(chan string, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case why := <-d.convergeReq:
				d.converge(ctx, why)
			}
		}
	}()
	d.setConfig(cfg)
	// An apply that waited for confirmation when the daemon stopped (or
	// that a CLI without daemon left) still rolls back at its deadline, or
	// at once if that has passed.
	if pend, err := opt.Engine.Pending(); err != nil {
		d.log.Error("reading the pending apply", "err", err)
	} else if pend != nil {
		d.log.Warn("an apply waits for confirmation", "revision", pend.Revision, "deadline", pend.Deadline)
		d.armConfirm(*pend)
	}

	stopAPI, err := d.serveAPI(ln)
	if err != nil {
		return err
	}
	defer stopAPI()
	return d.loop(ctx)
}

// serveAPI serves the API on the unix socket ln and, when asked, over
// mutual TLS; stop shuts both down.
func (d *Daemon) serveAPI(ln net.Listener) (stop func(), err error) {
	opt := d.opt
	srv := &http.Server{Handler: api.Handler(d, d.log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("api server stopped", "err", err)
		}
	}()
	stop = func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(shutdown)
		cancel()
	}
	if opt.APIAddr == "" {
		return stop, nil
	}
	tln, err := api.ListenTLS(opt.APIAddr, opt.TLSCert, opt.TLSKey, opt.TLSClientCA)
	if err != nil {
		stop()
		return nil, err
	}
	tsrv := &http.Server{Handler: api.Handler(d, d.log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := tsrv.Serve(tln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("tls api server stopped", "err", err)
		}
	}()
	d.log.Info("serving the api over mutual TLS", "addr", opt.APIAddr)
	return func() { tsrv.Close(); stop() }, nil
}

// loop listens to the kernel's events and the timers until ctx is done,
// asking for converges; a new tap is adopted at its event.
func (d *Daemon) loop(ctx context.Context) error {
	opt := d.opt
	done := make(chan struct{})
	defer close(done)
	events, err := opt.Events.WatchLinks(done)
	if err != nil {
		d.log.Warn("not watching links; late taps are adopted by the periodic pass only", "err", err)
	}
	nftEvents, err := opt.Events.WatchRuleset(done)
	if err != nil {
		d.log.Warn("not watching nftables; a flushed ruleset waits for the periodic pass", "err", err)
	}
	tick := time.NewTicker(opt.Resync)
	defer tick.Stop()
	// Sysctls change without any event: read the one kvmnet needs every
	// second (a file read), so a reset is repaired well within 2 s even
	// with a long safety pass.
	sysctlTick := time.NewTicker(time.Second)
	defer sysctlTick.Stop()
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping (the kernel state stays as it is)")
			d.stopServices()
			os.Remove(opt.Socket)
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// Take every event already queued: a new tap comes with a
			// few (its peer, its state, its enslaving), and one converge
			// covers them all.
			batch := []link.Event{ev}
		drain:
			for {
				select {
				case more, ok := <-events:
					if !ok {
						events = nil
						break drain
					}
					batch = append(batch, more)
				default:
					break drain
				}
			}
			d.onLinks(ctx, batch)
		case _, ok := <-nftEvents:
			if !ok {
				nftEvents = nil
				continue
			}
			d.requestConverge("nftables")
		case done := <-d.bind:
			// One converge binds every lease whose ACK waits by now:
			// guests that boot together are bound together.
			waiting := []chan struct{}{done}
		binds:
			for {
				select {
				case more := <-d.bind:
					waiting = append(waiting, more)
				default:
					break binds
				}
			}
			d.converge(ctx, "dhcp lease")
			for _, done := range waiting {
				close(done)
			}
		case <-d.kick:
			d.requestConverge("services")
		case <-tick.C:
			d.requestConverge("periodic")
		case <-sysctlTick.C:
			if d.sysctlDrifted() {
				d.requestConverge("sysctl")
			}
		}
	}
}

// converge re-applies the desired state and logs what it did.
func (d *Daemon) converge(ctx context.Context, why string) {
	start := time.Now()
	p, err := d.opt.Engine.Converge(ctx)
	d.metrics.ObserveReconcile(time.Since(start), err)
	if err != nil {
		d.log.Error("reconcile failed", "trigger", why, "err", err)
		return
	}
	d.sysctls.Store(&p.Sysctls)
	if !p.Empty() {
		d.log.Info("reconciled", "trigger", why, "actions", p.Summary())
		for _, a := range p.Actions {
			d.metrics.DriftRepaired(string(a.Op()))
		}
	}
	d.restartRecreated(p)
	if w := d.want.Load(); w != nil {
		d.syncServices(w.cfg)
	}
}

// sysctlDrifted reports whether ip_forward is off while a NAT network
// needs it on, or a sysctl the last reconcile set (conntrack's) has
// another value now.
func (d *Daemon) sysctlDrifted() bool {
	if want := d.sysctls.Load(); want != nil {
		for key, value := range *want {
			if v, err := d.opt.Events.ReadSysctl(key); err == nil && v != value {
				return true
			}
		}
	}
	need := false
	for _, n := range d.wanted().cfg.Networks {
		need = need || n.Mode == model.ModeNAT
	}
	if !need {
		return false
	}
	v, err := d.opt.Events.ReadSysctl(plan.SysctlIPForward)
	return err == nil && v != "1"
}

// restartRecreated stops the servers of bridges the plan (re)created: a
// DHCP socket bound to a deleted bridge never hears from the new one.
// syncServices then starts them afresh.
func (d *Daemon) restartRecreated(p *plan.Plan) {
	created := map[string]bool{}
	for _, a := range p.Actions {
		if a.Op() == plan.OpAddBridge {
			created[a.Link()] = true
		}
	}
	if len(created) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, s := range d.dhcp {
		if created[s.iface] {
			s.Close()
			delete(d.dhcp, name)
		}
	}
	for name, s := range d.dns {
		if n := d.wanted().cfg.Network(name); n != nil && created[n.Bridge] {
			s.Close()
			delete(d.dns, name)
		}
	}
}

// Plan implements api.Backend.
func (d *Daemon) Plan(ctx context.Context, cfg *model.Config) (*plan.Plan, error) {
	return d.opt.Engine.Plan(ctx, cfg)
}

// Apply implements api.Backend: apply, then serve the new state.
func (d *Daemon) Apply(ctx context.Context, cfg *model.Config, doc []byte, opt engine.ApplyOptions) (*plan.Plan, error) {
	start := time.Now()
	p, err := d.opt.Engine.Apply(ctx, cfg, doc, opt)
	return d.served(start, p, cfg, err)
}

// StoreCheck implements api.Backend.
func (d *Daemon) StoreCheck() *store.Report {
	return store.Inspect(d.opt.Engine.Store.Path(), d.opt.Engine.Store)
}

// Destroy implements api.Backend.
func (d *Daemon) Destroy(ctx context.Context) (*plan.Plan, error) {
	d.stopServices()
	p, err := d.opt.Engine.Destroy(ctx)
	if err != nil {
		return p, err
	}
	d.setConfig(&model.Config{})
	return p, nil
}

// SaveBaseline implements api.Backend.
func (d *Daemon) SaveBaseline(name string, data []byte) error {
	return d.opt.Engine.Store.SaveBaseline(name, data)
}

// Baseline implements api.Backend.
func (d *Daemon) Baseline(name string) ([]byte, error) { return d.opt.Engine.Store.Baseline(name) }

// Baselines implements api.Backend.
func (d *Daemon) Baselines() ([]string, error) { return d.opt.Engine.Store.Baselines() }

// Revisions implements api.Backend.
func (d *Daemon) Revisions() ([]store.Revision, error) { return d.opt.Engine.Store.Revisions() }

// Revision implements api.Backend.
func (d *Daemon) Revision(rev uint64) ([]byte, error) { return d.opt.Engine.Store.Revision(rev) }

// Events implements api.Backend.
func (d *Daemon) Events(since uint64) ([]store.Event, error) { return d.opt.Engine.Store.Events(since) }

// DesiredDoc implements api.Backend.
func (d *Daemon) DesiredDoc() (string, []byte, error) { return d.opt.Engine.DesiredDoc() }

// Status implements api.Backend, with the DHCP pools the daemon serves.
func (d *Daemon) Status(ctx context.Context) (*engine.Status, error) {
	st, err := d.opt.Engine.Status(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.dhcp {
		p := s.Pool()
		st.Pools = append(st.Pools, engine.PoolStatus{Network: p.Network, Size: p.Size, Used: p.Used, Free: p.Free, Reserved: p.Reserved})
	}
	sort.Slice(st.Pools, func(i, j int) bool { return st.Pools[i].Network < st.Pools[j].Network })
	for i, n := range st.Networks {
		if c, ok := d.hostDHCP[n.Name]; ok {
			st.Networks[i].Notes = append(st.Networks[i].Notes, hostLeaseNote(c.Status()))
		}
	}
	return st, nil
}

// wanted is one desired state as the daemon serves it.
type wanted struct {
	cfg *model.Config
	// taps are the tap names of the desired state.
	taps map[string]bool
	// protected are the MACs of interfaces with spoofguard, whose leases
	// must be bound before their ACK.
	protected map[string]bool
	// snoopPorts are the protected ports of bridged networks, whose
	// addresses the LAN's DHCP server hands out.
	snoopPorts map[string]snoopPort
}

// wanted returns the desired state served; never nil.
func (d *Daemon) wanted() *wanted {
	if w := d.want.Load(); w != nil {
		return w
	}
	return &wanted{cfg: &model.Config{}}
}

func (d *Daemon) setConfig(cfg *model.Config) {
	// The daemon serves the networks of this host's Linux datapath; other
	// backends bring their own services.
	cfg = cfg.ForBackend(model.BackendLinux)
	w := &wanted{cfg: cfg, taps: map[string]bool{}, protected: map[string]bool{}, snoopPorts: snoopPorts(cfg)}
	for _, vm := range cfg.VMs {
		for _, ifc := range vm.Interfaces {
			w.taps[ifc.Tap] = true
			if ifc.Security.SpoofguardOn() {
				w.protected[ifc.HWAddr] = true
			}
		}
	}
	d.want.Store(w)
	d.syncServices(cfg)
}

// syncServices starts, updates and stops the DHCP and DNS servers so that
// every NAT network of cfg is served on its bridge, and nothing else.
func (d *Daemon) syncServices(cfg *model.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	for i := range cfg.Networks {
		n := &cfg.Networks[i]
		if n.Mode != model.ModeNAT {
			continue
		}
		seen[n.Name] = true
		log := d.log.With("network", n.Name)
		if n.DHCP.On() {
			dc := dhcpConfig(cfg, n)
			if s, ok := d.dhcp[n.Name]; ok && s.iface == dc.Interface {
				if err := s.Update(dc); err != nil {
					log.Error("updating dhcp server", "err", err)
				}
			} else {
				if ok {
					s.Close()
					delete(d.dhcp, n.Name)
				}
				if s, err := d.startDHCP(dc, log); err != nil {
					log.Error("starting dhcp server (retrying at the next pass)", "err", err)
				} else {
					d.dhcp[n.Name] = &dhcpServer{s, dc.Interface}
					log.Info("serving dhcp", "bridge", n.Bridge, "range", n.DHCP.Range)
				}
			}
		} else if s, ok := d.dhcp[n.Name]; ok {
			s.Close()
			delete(d.dhcp, n.Name)
		}
		if n.DNS.On() {
			dc := d.dnsConfig(cfg, n)
			if s, ok := d.dns[n.Name]; ok && s.listen == dc.Listen && s.iface == dc.Interface {
				if err := s.Update(dc); err != nil {
					log.Error("updating dns server", "err", err)
				}
			} else {
				if ok {
					s.Close()
					delete(d.dns, n.Name)
				}
				if s, err := dns.New(dc, log); err != nil {
					log.Error("creating dns server", "err", err)
				} else if err := s.Start(); err != nil {
					log.Error("starting dns server (retrying at the next pass)", "err", err)
				} else {
					d.dns[n.Name] = &dnsServer{s, dc.Listen, dc.Interface}
					log.Info("serving dns", "listen", dc.Listen, "domain", dc.Domain)
				}
			}
		} else if s, ok := d.dns[n.Name]; ok {
			s.Close()
			delete(d.dns, n.Name)
		}
	}
	for name, s := range d.dhcp {
		if !seen[name] {
			s.Close()
			delete(d.dhcp, name)
		}
	}
	d.syncHostDHCP(cfg)
	d.syncSnooping()
	for name, s := range d.dns {
		if !seen[name] {
			s.Close()
			delete(d.dns, name)
		}
	}
}

// startDHCP starts a network's DHCP server; its ACKs wait until the lease
// is bound to the guest's port (bindLease).
func (d *Daemon) startDHCP(dc dhcp.Config, log *slog.Logger) (*dhcp.Server, error) {
	s, err := dhcp.New(dc, d.opt.Engine.Store, log)
	if err != nil {
		return nil, err
	}
	s.OnACK(d.bindLease)
	network := dc.Network
	s.OnIgnored(func(i dhcp.Ignored) { d.metrics.DHCPIgnored(network, i.Type, i.Reason) })
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (d *Daemon) stopServices() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, s := range d.dhcp {
		s.Close()
		delete(d.dhcp, name)
	}
	for name, s := range d.dns {
		s.Close()
		delete(d.dns, name)
	}
}

func dhcpConfig(cfg *model.Config, n *model.Network) dhcp.Config {
	dc := dhcp.Config{
		Network: n.Name, Interface: n.Bridge, ServerIP: n.Gateway, Subnet: n.Subnet,
		RangeStart: n.DHCP.RangeStart, RangeEnd: n.DHCP.RangeEnd, LeaseTime: n.DHCP.Lease.Duration,
		Router: n.Gateway, MTU: n.MTU,
	}
	if n.DNS.On() {
		dc.DNS = []netip.Addr{n.Gateway}
		dc.Domain = n.DNS.Domain
	}
	for _, p := range cfg.Ports(n.Name) {
		if p.Iface.IP.IsValid() {
			dc.Reservations = append(dc.Reservations, dhcp.Reservation{MAC: p.Iface.HWAddr, IP: p.Iface.IP, Hostname: p.VM})
		}
		dc.Ports = append(dc.Ports, dhcp.Port{Tap: p.Iface.Tap, MAC: p.Iface.HWAddr, Spoofguard: p.Iface.Security.SpoofguardOn()})
	}
	return dc
}

// dnsConfig serves NAME.DOMAIN for every guest of n with a reservation or
// an active lease.
func (d *Daemon) dnsConfig(cfg *model.Config, n *model.Network) dns.Config {
	ports := cfg.Ports(n.Name)
	network := n.Name
	store := d.opt.Engine.Store
	return dns.Config{
		Network: n.Name, Listen: n.Gateway, Domain: n.DNS.Domain, Subnet: n.Subnet, Upstreams: d.opt.Upstreams,
		// Guests on the bridge only: not the LAN, should it route the
		// subnet to the host (Clients defaults to Subnet).
		Interface: n.Bridge,
		Records: func() []dns.Record {
			leases, _ := store.Leases(network)
			now := time.Now()
			byMAC := map[string]netip.Addr{}
			for _, l := range leases {
				if !l.Expired(now) {
					byMAC[l.MAC] = l.IP
				}
			}
			var recs []dns.Record
			for _, p := range ports {
				ip := p.Iface.IP
				if !ip.IsValid() {
					ip = byMAC[p.Iface.HWAddr]
				}
				if ip.IsValid() {
					recs = append(recs, dns.Record{Name: p.VM, IP: ip})
				}
			}
			return recs
		},
	}
}

// metricInterfaces lists the bridges and taps of the desired state.
func (d *Daemon) metricInterfaces() []metrics.Interface {
	var out []metrics.Interface
	cfg := d.wanted().cfg
	for _, n := range cfg.Networks {
		out = append(out, metrics.Interface{Name: n.Bridge, Network: n.Name})
		for _, p := range cfg.Ports(n.Name) {
			out = append(out, metrics.Interface{Name: p.Iface.Tap, Network: n.Name, VM: p.VM})
		}
	}
	return out
}

// metricPools reports the DHCP pools the daemon serves.
func (d *Daemon) metricPools() []metrics.Pool {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []metrics.Pool
	for _, s := range d.dhcp {
		p := s.Pool()
		out = append(out, metrics.Pool{Network: p.Network, Used: p.Used, Free: p.Free})
	}
	return out
}

// metricForwards counts the forwards of each network.
func (d *Daemon) metricForwards() map[string]int {
	out := map[string]int{}
	for _, n := range d.wanted().cfg.Networks {
		if n.Mode == model.ModeNAT {
			out[n.Name] = len(n.Forwards)
		}
	}
	return out
}

// String for logs.
func (d *Daemon) String() string { return fmt.Sprintf("daemon(%s)", d.opt.Socket) }
