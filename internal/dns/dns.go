// Package dns is the embedded DNS forwarder of kvmnet's NAT networks. There is
// one Server per network, listening on the network's gateway address only (UDP
// and TCP port 53) with its sockets bound to the network's bridge, and
// answering sources inside the network's subnet only: it answers the guests
// of that network and never the uplink, even when the LAN routes the subnet
// to the host. It is not an open resolver. It answers for the guests' own names
// (NAME.DOMAIN and the matching reverse names) itself and forwards everything
// else to the host's upstream resolvers.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

const (
	// DefaultTimeout bounds each try of an upstream.
	DefaultTimeout = 2 * time.Second

	// ResolvConf is where default upstreams come from.
	ResolvConf = "/etc/resolv.conf"

	// localTTL is the TTL of the answers for the guests' own names: short,
	// so a guest that changes address is seen quickly, and long enough that
	// a chatty guest does not ask for every connection.
	localTTL = 30

	// failLogEvery rate-limits the "all upstreams failed" warning, which
	// otherwise repeats for every query while the uplink is down.
	failLogEvery = time.Minute

	// shutdownWait bounds how long Close waits for queries in flight.
	shutdownWait = 5 * time.Second
)

// Record is one guest name the server answers for.
type Record struct {
	// Name is the guest's name, normally the VM name ("web1"); it is
	// served as Name.Domain. A Name already ending in Domain is used as is.
	Name string
	// IP of the guest: an A record for IPv4, AAAA for IPv6, and the
	// matching PTR record.
	IP netip.Addr
}

// Config is what one network's DNS server serves.
type Config struct {
	// Network is the kvmnet network name, for logs.
	Network string
	// Listen is the network's gateway address. The server binds to it
	// alone; it must be a specific address already configured on the
	// network's bridge (the wildcard address is refused).
	Listen netip.Addr
	// Domain of the guests, e.g. "dev.kvm": NAME.Domain resolves to the
	// guest's address and other names inside Domain do not exist. Empty
	// makes the server a plain forwarder.
	Domain string
	// Subnet, when set, makes reverse lookups of addresses inside it
	// local: a known guest gets its PTR and any other address NXDOMAIN,
	// instead of leaking the private query to the upstreams.
	Subnet netip.Prefix
	// Records returns the guests' names and addresses. It is called for
	// every query about a local name, so it must be cheap and safe to call
	// from several goroutines; nil means no records.
	Records func() []Record
	// Upstreams are resolvers tried in order for everything else, as
	// "IP" or "IP:PORT" (port 53 by default). Empty means the nameservers of
	// /etc/resolv.conf, read at New and at every Update.
	Upstreams []string
	// Timeout of each upstream try. Zero means DefaultTimeout. When every
	// upstream fails the client gets SERVFAIL.
	Timeout time.Duration
	// Interface is the network's bridge. The sockets are bound to it
	// (SO_BINDTODEVICE), so a query for Listen that arrives anywhere
	// else (the LAN routing the subnet to the host, the host itself) finds
	// nobody: the kernel answers port unreachable. Empty binds to no
	// device, for tests on loopback.
	Interface string
	// Clients are the addresses served; queries from anywhere else are
	// dropped (UDP, whose source may be forged) or REFUSED (TCP). Zero
	// means Subnet; with neither, everyone.
	Clients netip.Prefix
	// Port to listen on; zero means 53. For tests, which cannot bind 53.
	Port int
}

// Server is the DNS server of one network.
type Server struct {
	network    string // cfg.Network at New, for errors
	log        *slog.Logger
	resolvConf string
	// refused counts queries from outside Clients; lastRefused (unix
	// nanoseconds) rate-limits their warning.
	refused     atomic.Uint64
	lastRefused atomic.Int64

	mu       sync.RWMutex // guards everything below
	cfg      Config       // normalised: see normalise
	udp, tcp *mdns.Server
	closed   bool
	lastFail time.Time
}

// New validates cfg and prepares a server; Start opens its sockets. A nil log
// discards messages.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	return newServer(cfg, log, ResolvConf)
}

// newServer is New with another resolv.conf, for tests.
func newServer(cfg Config, log *slog.Logger, resolvConf string) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		network:    cfg.Network,
		log:        log.With("network", cfg.Network, "listen", cfg.Listen),
		resolvConf: resolvConf,
	}
	c, err := s.normalise(cfg)
	if err != nil {
		return nil, err
	}
	if len(c.Upstreams) == 0 {
		// The server still answers the guests' own names; the rest gets
		// SERVFAIL until an Update finds upstreams.
		_, why := s.resolvConfServers()
		s.log.Warn("no upstream DNS servers, only local names will resolve", "resolv_conf", s.resolvConf, "err", why)
	}
	s.cfg = c
	return s, nil
}

// normalise validates cfg and returns it with the domain in canonical form
// (lowercase, fully qualified), upstreams as "IP:PORT" and defaults filled.
func (s *Server) normalise(cfg Config) (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return cfg, fmt.Errorf("dns config of network %q: "+format, append([]any{cfg.Network}, args...)...)
	}
	if !cfg.Listen.IsValid() || cfg.Listen.IsUnspecified() {
		return bad("listen address %q must be the network's gateway address, not empty or a wildcard (that would make an open resolver)", cfg.Listen)
	}
	cfg.Listen = cfg.Listen.Unmap()
	if cfg.Port == 0 {
		cfg.Port = 53
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return bad("port %d must be between 1 and 65535", cfg.Port)
	}
	if d := strings.Trim(cfg.Domain, "."); d != "" {
		if _, ok := mdns.IsDomainName(d); !ok || strings.ContainsAny(d, " \\") {
			return bad("domain %q is not a valid domain name", cfg.Domain)
		}
		cfg.Domain = mdns.Fqdn(strings.ToLower(d))
	} else {
		cfg.Domain = ""
	}
	if !cfg.Clients.IsValid() {
		cfg.Clients = cfg.Subnet
	}
	cfg.Clients = cfg.Clients.Masked()
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return bad("timeout %s must be positive", cfg.Timeout)
	}
	self := netip.AddrPortFrom(cfg.Listen, uint16(cfg.Port))
	ups := cfg.Upstreams
	if len(ups) == 0 {
		// A missing or empty resolv.conf is not fatal: see New.
		ups, _ = s.resolvConfServers()
	}
	cfg.Upstreams = nil
	for _, u := range ups {
		ap, err := parseUpstream(u)
		if err != nil {
			return bad("%v", err)
		}
		// Forwarding to ourselves would loop until the timeout.
		if ap == self {
			continue
		}
		cfg.Upstreams = append(cfg.Upstreams, ap.String())
	}
	return cfg, nil
}

func parseUpstream(u string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(u); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	// resolv.conf may carry a zone ("fe80::1%eth0"); keep it.
	if a, err := netip.ParseAddr(u); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	return netip.AddrPort{}, fmt.Errorf("upstream %q must be an IP address with an optional port, like 192.0.2.53 or [2001:db8::53]:53", u)
}

// resolvConfServers returns the nameservers of s.resolvConf as "IP:PORT".
func (s *Server) resolvConfServers() ([]string, error) {
	cc, err := mdns.ClientConfigFromFile(s.resolvConf)
	if err != nil {
		return nil, fmt.Errorf("reading nameservers from %q: %w", s.resolvConf, err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("%q lists no nameserver", s.resolvConf)
	}
	out := make([]string, 0, len(cc.Servers))
	for _, srv := range cc.Servers {
		out = append(out, net.JoinHostPort(srv, cc.Port))
	}
	return out, nil
}

// Config returns the configuration in effect, normalised: the domain fully
// qualified and the upstreams actually used.
func (s *Server) Config() Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.cfg
	c.Upstreams = append([]string(nil), c.Upstreams...)
	return c
}

// Update switches to cfg for the next query, without reopening sockets. With
// no Upstreams, /etc/resolv.conf is read again. Listen and Port cannot change:
// close the server and create a new one.
func (s *Server) Update(cfg Config) error {
	c, err := s.normalise(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Listen != s.cfg.Listen || c.Port != s.cfg.Port || c.Interface != s.cfg.Interface {
		return fmt.Errorf("updating dns server of network %q: listen address %s port %d on %q cannot change (to %s port %d on %q) without a restart", s.cfg.Network, s.cfg.Listen, s.cfg.Port, s.cfg.Interface, c.Listen, c.Port, c.Interface)
	}
	// Say so when the upstreams go away, not on every reconcile.
	if len(c.Upstreams) == 0 && len(s.cfg.Upstreams) > 0 {
		s.log.Warn("no upstream DNS servers left, only local names will resolve", "resolv_conf", s.resolvConf)
	}
	s.cfg = c
	return nil
}

// Start opens UDP and TCP sockets on Listen:53 and serves in the background
// until Close. Sockets live in the network namespace of the calling thread.
// Listen must already be an address of the host, or the bind fails.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil || s.closed {
		return fmt.Errorf("starting dns server of network %q: already started or closed", s.cfg.Network)
	}
	addr := netip.AddrPortFrom(s.cfg.Listen, uint16(s.cfg.Port)).String()
	lc := listenConfig(s.cfg.Interface)
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return fmt.Errorf("starting dns server of network %q: %w", s.cfg.Network, err)
	}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("starting dns server of network %q: %w", s.cfg.Network, err)
	}
	udp := &mdns.Server{PacketConn: pc, Handler: s}
	tcp := &mdns.Server{Listener: l, Handler: s}
	// Wait until both serve loops run: Shutdown of a server that has not
	// started yet fails and leaves it to start afterwards.
	started, failed := make(chan struct{}, 2), make(chan error, 2)
	for _, srv := range []*mdns.Server{udp, tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
			}
		}()
	}
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case err := <-failed:
			// Stop whichever loop did start; both sockets are closed.
			udp.Shutdown()
			tcp.Shutdown()
			pc.Close()
			l.Close()
			return fmt.Errorf("starting dns server of network %q on %s: %w", s.cfg.Network, addr, err)
		}
	}
	s.udp, s.tcp = udp, tcp
	s.log.Info("dns server started", "domain", s.cfg.Domain, "upstreams", s.cfg.Upstreams)
	return nil
}

// listenConfig binds sockets to device iface, if any.
func listenConfig(iface string) *net.ListenConfig {
	if iface == "" {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("binding to interface %q: %w", iface, err)
		}
		return nil
	}}
}

// Close stops serving and waits (a few seconds at most) for queries in
// flight. Calling it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	udp, tcp := s.udp, s.tcp
	s.mu.Unlock()
	if udp == nil {
		return nil
	}
	var errs []error
	for _, srv := range []*mdns.Server{udp, tcp} {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
		errs = append(errs, srv.ShutdownContext(ctx))
		cancel()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing dns server of network %q: %w", s.network, err)
	}
	return nil
}

// Addr is the UDP address the server listens on, for logs and tests; the
// zero value before Start.
func (s *Server) Addr() netip.AddrPort {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.udp == nil {
		return netip.AddrPort{}
	}
	return s.udp.PacketConn.LocalAddr().(*net.UDPAddr).AddrPort()
}
