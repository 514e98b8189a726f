// Package hostdhcp is the DHCPv4 client that keeps the host's own address on
// a bridge leased from the LAN's DHCP server.
//
// When kvmnet turns a NIC (eth0) into a bridge port, the host's addresses
// move to the bridge, which takes eth0's MAC. An address eth0 had learned by
// DHCP has a finite lifetime (valid_lft) and whatever client renewed it was
// watching eth0, not the bridge. A Client takes over: it asks for the same
// address (Config.Want), puts the leased address on the bridge with the
// lease's lifetime, and renews it at T1 (unicast to the server), rebinds at
// T2 (broadcast to any server) and starts over when the lease ends or a
// server refuses it, as RFC 2131 section 4.4 describes.
//
// It changes addresses only, never routes: kvmnet moved the routes to the
// bridge already, and the router a server announces (option 3) is only
// logged. It never releases a lease: when Run returns the address stays,
// with a lifetime that makes the kernel drop it when the lease ends.
//
// Everything happens in the network namespace of the calling process:
// sockets and netlink requests are opened there, and nothing switches
// namespaces.
package hostdhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Config says which interface to keep leased and how to ask.
type Config struct {
	// Iface is the interface to lease an address for, such as the bridge
	// "br0". It may be missing or down when Run starts: Run waits for it.
	// Its MAC is the client hardware address (chaddr), which is what LAN
	// reservations match: the bridge carries the uplink's MAC.
	Iface string
	// Log receives what the client does and every error; nil discards.
	Log *slog.Logger
	// Want, when valid, is the address to ask for first, such as
	// 192.168.1.20/24: the one moved from the uplink. If the server hands
	// out another address, Want is removed from Iface once the new one is
	// on it.
	Want netip.Prefix
	// Hostname, when set, is sent as option 12 so that the LAN's DNS keeps
	// the name the uplink's client registered (usually os.Hostname()).
	Hostname string
	// ClientID, when set, is sent as option 61. Set it to the identifier
	// the uplink's previous client used (systemd-networkd sends a DUID by
	// default) if the server keys its leases by client identifier:
	// otherwise the server sees a new client and may hand out a new
	// address while the old lease runs out.
	ClientID []byte

	// renewAfter, when set, replaces T1 for a lease of the given length:
	// tests use it to renew within a second.
	renewAfter func(length time.Duration) time.Duration
	// host replaces the kernel in tests.
	host host
}

// State is where the client stands in RFC 2131's state machine (figure 5),
// plus the wait for the interface.
type State string

// The states a Client reports.
const (
	// StateWaiting: the interface is missing or down.
	StateWaiting State = "waiting"
	// StateSelecting: broadcasting DISCOVER and REQUEST for a new lease.
	StateSelecting State = "selecting"
	// StateBound: leased; nothing to do until T1.
	StateBound State = "bound"
	// StateRenewing: past T1, asking the lease's server to extend it.
	StateRenewing State = "renewing"
	// StateRebinding: past T2, asking any server to extend it.
	StateRebinding State = "rebinding"
	// StateStopped: Run has returned, or has not started.
	StateStopped State = "stopped"
)

// Status is what `kvmnet get networks` shows of a Client.
type Status struct {
	// Iface is Config.Iface.
	Iface string `json:"iface"`
	// State is where the client is now.
	State State `json:"state"`
	// Address is the leased address with its prefix length; zero while
	// there is no lease.
	Address netip.Prefix `json:"address,omitzero"`
	// Server is the DHCP server that granted the lease.
	Server netip.Addr `json:"server,omitzero"`
	// Router is the first router the server announced (not applied).
	Router netip.Addr `json:"router,omitzero"`
	// Obtained is when the lease began, the last time it was extended.
	Obtained time.Time `json:"obtained,omitzero"`
	// Renew (T1), Rebind (T2) and Expires are when the client will ask its
	// server, ask any server, and lose the address.
	Renew   time.Time `json:"renew,omitzero"`
	Rebind  time.Time `json:"rebind,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
	// Infinite is true for a lease without end.
	Infinite bool `json:"infinite,omitempty"`
	// LastError is the last thing that went wrong, kept after recovery
	// so that flapping shows; LastErrorTime says when.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
}

// host is what a Client needs from the kernel, one verb per method; the
// real one is in host_linux.go and tests use a fake.
type host interface {
	// link reports the interface's MAC and whether it can carry traffic
	// (administratively up and with carrier). A missing interface is an
	// error for which errors.Is(err, errNoLink) holds.
	link(name string) (mac net.HardwareAddr, ready bool, err error)
	// listen opens the client's UDP socket: 0.0.0.0:68 bound to the
	// interface. Not the leased address, even for a unicast RENEW: a
	// server broadcasts its DHCPNAK (RFC 2131 section 4.1).
	listen(name string) (net.PacketConn, error)
	// replaceAddr is `ip addr replace P brd B dev NAME valid_lft L
	// preferred_lft L`, with lifetime 0 meaning forever. On an address
	// that is there already the kernel changes only the lifetimes (and
	// keeps its routes), not the broadcast address.
	replaceAddr(name string, p netip.Prefix, brd netip.Addr, lifetime time.Duration) error
	// delAddr is `ip addr del P dev NAME`; a missing address is no error.
	delAddr(name string, p netip.Prefix) error
	// defaultGateway is the gateway of the main table's default route
	// through the interface, invalid when there is none.
	defaultGateway(name string) (netip.Addr, error)
}

// errNoLink is wrapped by host.link when the interface does not exist.
var errNoLink = errors.New("no such interface")

// Timeouts of one attempt in each state. Within one, exchange retransmits
// after 4, 8, 16... seconds (RFC 2131 section 4.1).
const (
	// selectTimeout bounds DISCOVER until an OFFER, and then REQUEST until
	// an ACK: transmissions at 0, 4, 12 and 28 s.
	selectTimeout = 60 * time.Second
	// extendTimeout bounds one RENEW or REBIND: at 0, 4 and 12 s. After it
	// the client waits as retryAt says.
	extendTimeout = 20 * time.Second
	// acquireRetryMax caps the wait between failed attempts to get a lease.
	acquireRetryMax = 5 * time.Minute
	// linkRetryMax caps the wait between looks at a missing or down
	// interface.
	linkRetryMax = 30 * time.Second
	// minAcquireInterval spaces two DISCOVERs even when a lease ends at
	// once (a server that hands out zero-second leases, or NAKs every
	// RENEW), so that no server can make Run loop.
	minAcquireInterval = 10 * time.Second
)

// Client keeps one interface's address leased. Create it with New, run it
// with Run, ask it how it goes with Status from any goroutine.
type Client struct {
	cfg  Config
	log  *slog.Logger
	host host

	// minAcquire is minAcquireInterval, shorter in tests.
	minAcquire time.Duration

	// held is the address this client has put on the interface, or was
	// told (Want) is there; it is removed when a lease for another
	// address replaces it. Only Run's goroutine touches it.
	held netip.Prefix

	mu     sync.Mutex
	status Status
}

// New checks cfg and returns a Client for it.
func New(cfg Config) (*Client, error) {
	if cfg.Iface == "" || len(cfg.Iface) > 15 || !validName(cfg.Iface) {
		return nil, fmt.Errorf("dhcp client: interface name %q: want 1 to 15 characters, none of them '/', ':' or white space", cfg.Iface)
	}
	if cfg.Want.IsValid() && !cfg.Want.Addr().Is4() {
		return nil, fmt.Errorf("dhcp client on %q: wanted address %q: want an IPv4 prefix such as 192.168.1.20/24", cfg.Iface, cfg.Want)
	}
	c := &Client{cfg: cfg, log: cfg.Log, host: cfg.host}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("iface", cfg.Iface)
	if c.host == nil {
		c.host = newHost()
	}
	c.held = cfg.Want
	c.minAcquire = minAcquireInterval
	c.status = Status{Iface: cfg.Iface, State: StateStopped}
	return c, nil
}

func validName(s string) bool {
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Status returns a snapshot of the client's state and lease.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Run keeps the interface's address leased until ctx is done, then returns
// nil. Errors on the way (no server, interface gone, a refused request) are
// logged, kept for Status, and retried with growing waits; none ends Run.
// On return the address stays on the interface: its lifetime is the
// lease's, so the kernel drops it when the lease ends unless a later Run
// renews it. Run must not be called twice at once.
func (c *Client) Run(ctx context.Context) error {
	defer c.setState(StateStopped)
	want := c.held.Addr()
	var last time.Time // start of the last acquire
	for ctx.Err() == nil {
		// A lease that ended at once must not make DISCOVERs back to
		// back.
		if !last.IsZero() && !sleep(ctx, c.minAcquire-time.Since(last)) {
			break
		}
		last = time.Now()
		l := c.acquire(ctx, want)
		for l != nil {
			want = l.addr.Addr()
			l = c.keep(ctx, l)
		}
	}
	return nil
}

// acquire gets a new lease (INIT and SELECTING states), asking for want,
// and puts it on the interface. It tries until it succeeds or ctx is done,
// when it returns nil.
func (c *Client) acquire(ctx context.Context, want netip.Addr) *lease {
	wait := time.Second
	for {
		mac, err := c.waitLink(ctx)
		if err != nil {
			return nil
		}
		c.setState(StateSelecting)
		l, err := c.discover(ctx, mac, want)
		if err == nil {
			if err = c.bind(l); err == nil {
				c.log.Info("dhcp lease bound", leaseAttrs(l)...)
				return l
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		wait = min(2*wait, acquireRetryMax)
		c.fail(err, "retry_in", wait.String())
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// waitLink returns the interface's MAC once it exists and is up, looking
// again with growing waits. It logs when the reason for waiting changes
// and returns an error only when ctx is done.
func (c *Client) waitLink(ctx context.Context) (net.HardwareAddr, error) {
	wait := 250 * time.Millisecond
	var why string
	for {
		mac, ready, err := c.host.link(c.cfg.Iface)
		switch {
		case err == nil && ready && len(mac) == 6:
			if why != "" {
				c.log.Info("dhcp client: interface is up", "mac", mac.String())
			}
			return mac, nil
		case errors.Is(err, errNoLink):
			err = fmt.Errorf("interface %q does not exist (yet)", c.cfg.Iface)
		case err == nil && len(mac) != 6:
			err = fmt.Errorf("interface %q has no Ethernet address (MAC %q)", c.cfg.Iface, mac)
		case err == nil:
			err = fmt.Errorf("interface %q is down or has no carrier", c.cfg.Iface)
		}
		if err.Error() != why {
			why = err.Error()
			c.setState(StateWaiting)
			c.fail(err, "waiting", true)
		}
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
		wait = min(2*wait, linkRetryMax)
	}
}

// discover broadcasts DISCOVER, takes the first OFFER, and asks for it
// with a broadcast REQUEST (RFC 2131 section 4.4.1).
func (c *Client) discover(ctx context.Context, mac net.HardwareAddr, want netip.Addr) (*lease, error) {
	conn, err := c.host.listen(c.cfg.Iface)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	d, err := c.newDiscover(mac, want)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, selectTimeout)
	offer, err := exchange(sctx, conn, limitedBroadcast, d, func(m *dhcpv4.DHCPv4) bool {
		_, ip := addr4(m.YourIPAddr)
		_, srv := addr4(m.ServerIdentifier())
		return m.MessageType() == dhcpv4.MessageTypeOffer && ip && srv
	})
	cancel()
	if err != nil {
		if errors.Is(err, errNoReply) {
			return nil, fmt.Errorf("no DHCPOFFER on %q within %s: is a DHCP server reachable on this LAN?", c.cfg.Iface, selectTimeout)
		}
		return nil, fmt.Errorf("discovering a DHCP server on %q: %w", c.cfg.Iface, err)
	}
	r, err := c.newSelect(offer)
	if err != nil {
		return nil, err
	}
	server := offer.ServerIdentifier()
	sent := time.Now()
	sctx, cancel = context.WithTimeout(ctx, selectTimeout)
	ack, err := exchange(sctx, conn, limitedBroadcast, r, func(m *dhcpv4.DHCPv4) bool {
		return isType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)(m) && m.ServerIdentifier().Equal(server)
	})
	cancel()
	if err != nil {
		if errors.Is(err, errNoReply) {
			return nil, fmt.Errorf("no DHCPACK from %s on %q for offered %s within %s", server, c.cfg.Iface, offer.YourIPAddr, selectTimeout)
		}
		return nil, fmt.Errorf("requesting offered %s from %s on %q: %w", offer.YourIPAddr, server, c.cfg.Iface, err)
	}
	if err := asNAK(ack); err != nil {
		return nil, fmt.Errorf("requesting offered %s on %q: %w", offer.YourIPAddr, c.cfg.Iface, err)
	}
	return parseACK(ack, sent, nil)
}

// keep holds lease l: it waits for T1, renews, rebinds after T2, and
// returns the extended lease once it is on the interface. It returns nil
// when the lease is lost (refused, or ended without an answer) or ctx is
// done.
func (c *Client) keep(ctx context.Context, l *lease) *lease {
	c.setState(StateBound)
	if l.infinite() {
		<-ctx.Done()
		return nil
	}
	if !sleep(ctx, time.Until(l.renewAt())) {
		return nil
	}
	for _, st := range []struct {
		state State
		limit time.Time
	}{
		{StateRenewing, l.rebindAt()},
		{StateRebinding, l.expiry()},
	} {
		c.setState(st.state)
		for time.Now().Before(st.limit) {
			nl, err := c.extend(ctx, l, st.state, st.limit)
			if err == nil {
				if err = c.bind(nl); err == nil {
					c.log.Debug("dhcp lease extended", leaseAttrs(nl)...)
					return nl
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			var nak *NAKError
			if errors.As(err, &nak) {
				// RFC 2131 section 4.4.5: back to INIT. The address
				// stays until a new lease replaces it or the kernel
				// expires it: removing it now would also take the
				// routes kvmnet moved onto the bridge, and the usual
				// next offer is the same address.
				c.fail(err, "address", l.addr.String())
				c.clearLease()
				return nil
			}
			next := retryAt(time.Now(), st.limit)
			c.fail(err, "retry_in", time.Until(next).Round(time.Second).String())
			if !sleep(ctx, time.Until(next)) {
				return nil
			}
		}
	}
	c.fail(fmt.Errorf("lease on %s ended without an answer from any DHCP server; the kernel has removed the address", l.addr), "address", l.addr.String())
	c.clearLease()
	return nil
}

// extend sends one RENEW (unicast to the lease's server; the kernel picks
// the leased address as source, the interface's address on that subnet) or
// REBIND (broadcast) and waits for its answer until limit, or extendTimeout
// at most.
func (c *Client) extend(ctx context.Context, l *lease, state State, limit time.Time) (*lease, error) {
	mac, ready, err := c.host.link(c.cfg.Iface)
	if err != nil {
		return nil, fmt.Errorf("%s lease on %q: %w", verb(state), c.cfg.Iface, err)
	}
	if !ready {
		return nil, fmt.Errorf("%s lease on %q: interface is down or has no carrier", verb(state), c.cfg.Iface)
	}
	// Put the address back first if something took it away: the unicast
	// RENEW needs it as source, and the lease still holds.
	if err := c.host.replaceAddr(c.cfg.Iface, l.addr, l.brd, l.lifetime(time.Now())); err != nil {
		return nil, fmt.Errorf("%s lease: restoring %s on %q: %w", verb(state), l.addr, c.cfg.Iface, err)
	}
	dst := l.server
	if state == StateRebinding {
		dst = limitedBroadcast
	}
	conn, err := c.host.listen(c.cfg.Iface)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r, err := c.newExtend(mac, l.addr.Addr())
	if err != nil {
		return nil, err
	}
	sent := time.Now()
	deadline := sent.Add(extendTimeout)
	if limit.Before(deadline) {
		deadline = limit
	}
	ectx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ack, err := exchange(ectx, conn, dst, r, isType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if err != nil {
		if errors.Is(err, errNoReply) {
			return nil, fmt.Errorf("%s lease on %s: no answer from %s", verb(state), l.addr, dst)
		}
		return nil, fmt.Errorf("%s lease on %s with %s: %w", verb(state), l.addr, dst, err)
	}
	if err := asNAK(ack); err != nil {
		return nil, fmt.Errorf("%s lease on %s: %w", verb(state), l.addr, err)
	}
	return parseACK(ack, sent, l)
}

func verb(s State) string {
	if s == StateRebinding {
		return "rebinding"
	}
	return "renewing"
}

// bind puts lease l on the interface and makes it the current one. When it
// replaces another address, it adds the new one before deleting the old, so
// that the interface never has no address (the kernel flushes all of its
// routes when the last one goes).
func (c *Client) bind(l *lease) error {
	if c.cfg.renewAfter != nil {
		l.t1 = min(max(c.cfg.renewAfter(l.length), minRenew), l.t2)
	}
	life := l.lifetime(time.Now())
	if err := c.host.replaceAddr(c.cfg.Iface, l.addr, l.brd, life); err != nil {
		return fmt.Errorf("putting leased %s on %q: %w", l.addr, c.cfg.Iface, err)
	}
	if old := c.held; old.IsValid() && old != l.addr {
		if err := c.host.delAddr(c.cfg.Iface, old); err != nil {
			c.fail(fmt.Errorf("removing the previous address %s from %q: %w", old, c.cfg.Iface, err))
		} else {
			c.log.Info("dhcp server handed out another address; removed the previous one", "old", old.String(), "new", l.addr.String())
		}
		// Deleting a primary address also deletes its secondaries
		// unless net.ipv4.conf.IFACE.promote_secondaries is set, and
		// the new address is a secondary of the old one when they
		// share a subnet: put it back.
		if err := c.host.replaceAddr(c.cfg.Iface, l.addr, l.brd, life); err != nil {
			return fmt.Errorf("putting leased %s back on %q after removing %s: %w", l.addr, c.cfg.Iface, old, err)
		}
	}
	prev := c.Status()
	c.held = l.addr
	c.mu.Lock()
	c.status.Address = l.addr
	c.status.Server = l.server
	c.status.Router = l.router
	c.status.Obtained = l.start
	c.status.Infinite = l.infinite()
	if l.infinite() {
		c.status.Renew, c.status.Rebind, c.status.Expires = time.Time{}, time.Time{}, time.Time{}
	} else {
		c.status.Renew, c.status.Rebind, c.status.Expires = l.renewAt(), l.rebindAt(), l.expiry()
	}
	c.mu.Unlock()
	if l.router.IsValid() && l.router != prev.Router {
		c.checkRouter(l.router)
	}
	return nil
}

// checkRouter logs how the router a server announces compares with the
// default route through the interface, which this package leaves alone.
func (c *Client) checkRouter(router netip.Addr) {
	gw, err := c.host.defaultGateway(c.cfg.Iface)
	switch {
	case err != nil:
		c.log.Warn("dhcp server announces a router; could not read the default route to compare", "router", router.String(), "err", err)
	case !gw.IsValid():
		c.log.Warn("dhcp server announces a router, but no default route goes through the interface; not adding one", "router", router.String())
	case gw != router:
		c.log.Warn("dhcp server announces another router than the default route's; leaving the route as it is", "router", router.String(), "route_gateway", gw.String())
	default:
		c.log.Debug("dhcp router matches the default route", "router", router.String())
	}
}

// fail logs err and keeps it for Status.
func (c *Client) fail(err error, attrs ...any) {
	c.mu.Lock()
	c.status.LastError = err.Error()
	c.status.LastErrorTime = time.Now()
	c.mu.Unlock()
	c.log.Warn("dhcp client problem", append([]any{"err", err.Error()}, attrs...)...)
}

func (c *Client) setState(s State) {
	c.mu.Lock()
	c.status.State = s
	c.mu.Unlock()
}

// clearLease forgets the lease in Status.
func (c *Client) clearLease() {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.status
	s.Address, s.Server, s.Router = netip.Prefix{}, netip.Addr{}, netip.Addr{}
	s.Obtained, s.Renew, s.Rebind, s.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	s.Infinite = false
}

func leaseAttrs(l *lease) []any {
	a := []any{"address", l.addr.String(), "server", l.server.String()}
	if l.infinite() {
		return append(a, "lease", "infinite")
	}
	return append(a, "lease", l.length.String(), "renew_in", time.Until(l.renewAt()).Round(time.Second).String())
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
