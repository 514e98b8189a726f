package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kvmnet/kvmnet/internal/store"
)

// exhaustedLogEvery rate-limits the "pool exhausted" warning: a full pool is
// asked again by every waiting client every few seconds.
const exhaustedLogEvery = time.Minute

// Server is the DHCPv4 server of one NAT network. Create it with New, run it
// with Start and Close (or Serve); Update reconfigures it in place.
type Server struct {
	network string // cfg.Network, which never changes
	leases  LeaseStore
	log     *slog.Logger
	now     func() time.Time

	mu            sync.Mutex // guards everything below
	cfg           Config
	alloc         *allocator
	portByTap     map[string]Port // cfg.Ports by tap
	portByMAC     map[string]Port // cfg.Ports by MAC
	srv           *listener
	done          chan struct{} // closed when the serve loop ends
	serveErr      error
	closing       bool
	lastExhausted time.Time
	// owner is the port each MAC that no port is configured for got its
	// offer or lease through: while that lasts, only that port speaks
	// for the MAC.
	owner        map[string]string
	ownerSweepAt int // sweep owner when it grows to this many
	// declines is each port's DECLINE budget.
	declines map[string]*bucket
	// ignored counts the messages refused by admit, by type and reason.
	ignored map[Ignored]uint64
	// lastIgnored rate-limits the warning about refused messages.
	lastIgnored time.Time

	// inflight counts running packet handlers, so Close can wait for them
	// and nobody writes to the LeaseStore after Close returns.
	inflight sync.WaitGroup
	// waiting holds a token for each reply waiting for its write on a
	// goroutine of its own (see handle).
	waiting chan struct{}

	// onACK runs before an ACK goes out (see OnACK).
	onACK func(mac string)
	// onIgnored runs for every refused message (see OnIgnored).
	onIgnored func(Ignored)
}

// OnIgnored sets fn to run, under the server's lock, for every client
// message the server refuses to act on because it did not come from the
// client it names (see admit); the daemon counts them in its metrics. fn
// must not block. Call it before Start.
func (s *Server) OnIgnored(fn func(Ignored)) { s.onIgnored = fn }

// OnACK sets fn to run, without the server's lock, after a lease is
// stored and before its ACK is sent: the daemon binds the new address to
// the guest's port there, so the guest's first packet from it passes
// port security. fn must not block for long; the ACK waits for it. Call it
// before Start.
func (s *Server) OnACK(fn func(mac string)) { s.onACK = fn }

// New validates cfg and loads the network's persisted leases from leases. It
// opens no socket; Start does. A nil log discards messages.
func New(cfg Config, leases LeaseStore, log *slog.Logger) (*Server, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if leases == nil {
		return nil, fmt.Errorf("dhcp server of network %q: no lease store", cfg.Network)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stored, err := leases.Leases(cfg.Network)
	if err != nil {
		return nil, fmt.Errorf("loading leases of network %q: %w", cfg.Network, err)
	}
	var ok []store.Lease
	for _, l := range stored {
		// Records that are not ours or that cannot be parsed would only
		// confuse the allocator; they will be overwritten on the next ACK
		// for that MAC.
		if hw, err := net.ParseMAC(l.MAC); err == nil && len(hw) == 6 && l.IP.Is4() && l.Network == cfg.Network {
			l.MAC = hw.String()
			ok = append(ok, l)
		}
	}
	alloc, stale := newAllocator(cfg, ok)
	if len(stale) > 0 {
		ops := make([]store.LeaseOp, len(stale))
		for i, mac := range stale {
			ops[i] = store.LeaseOp{Lease: store.Lease{Network: cfg.Network, MAC: mac}, Delete: true}
		}
		if err := leases.QueueLeases(ops...).Wait(); err != nil {
			return nil, fmt.Errorf("deleting %d leases of network %q that conflict with others (first %s): %w", len(stale), cfg.Network, stale[0], err)
		}
	}
	s := &Server{
		network:      cfg.Network,
		leases:       leases,
		log:          log.With("network", cfg.Network, "interface", cfg.Interface),
		now:          time.Now,
		alloc:        alloc,
		owner:        map[string]string{},
		ownerSweepAt: ownerSweepMin,
		declines:     map[string]*bucket{},
		ignored:      map[Ignored]uint64{},
		waiting:      make(chan struct{}, maxWaiting),
	}
	s.setConfig(cfg)
	return s, nil
}

// setConfig switches to validated cfg; caller holds mu (or owns s alone).
func (s *Server) setConfig(cfg Config) {
	s.cfg = cfg
	s.portByTap = make(map[string]Port, len(cfg.Ports))
	s.portByMAC = make(map[string]Port, len(cfg.Ports))
	for _, p := range cfg.Ports {
		s.portByTap[p.Tap] = p
		s.portByMAC[p.MAC] = p
	}
}

// Start opens the server's sockets and serves requests in the background
// until Close. Requests are read off the ports of cfg.Interface with a
// packet socket, which tells the port and the Ethernet source of each
// (see listener); replies leave through a UDP socket on port 67 bound to
// the bridge. The sockets live in the network namespace of the calling
// thread: to serve inside a namespace, call Start from a goroutine locked
// into it.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil || s.closing {
		return fmt.Errorf("starting dhcp server of network %q: already started or closed", s.cfg.Network)
	}
	l, err := listen(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("starting dhcp server of network %q on %q: %w", s.cfg.Network, s.cfg.Interface, err)
	}
	s.srv = l
	s.done = make(chan struct{})
	go func() {
		err := l.serve(s.handle)
		s.mu.Lock()
		died := !s.closing
		if died {
			s.serveErr = err
		}
		s.mu.Unlock()
		if died {
			// Nobody else would notice until Close: guests stop
			// getting leases.
			s.log.Error("dhcp server stopped serving", "err", err)
		}
		close(s.done)
	}()
	s.log.Info("dhcp server started", "server", s.cfg.ServerIP, "range", s.cfg.RangeStart.String()+"-"+s.cfg.RangeEnd.String())
	return nil
}

// Serve runs Start, serves until ctx is done or the socket fails, then
// closes. It returns nil after a cancellation and the socket's error
// otherwise.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	return s.Close()
}

// Close stops serving and waits until requests being handled are done, so no
// lease is written after it returns. It returns the error that stopped the
// serve loop, if the loop died on its own. Calling it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	srv, done := s.srv, s.done
	s.mu.Unlock()
	var err error
	if srv != nil {
		srv.Close()
		<-done
		err = s.serveErr
	}
	s.inflight.Wait()
	if err != nil {
		return fmt.Errorf("dhcp server of network %q: %w", s.network, err)
	}
	return nil
}

// Update switches to a new configuration without dropping the socket: new
// reservations, range, options and lease time apply from the next request.
// Leases that no longer fit stay until their owner asks again and is refused.
// Interface and Network cannot change: close the server and create a new one.
func (s *Server) Update(cfg Config) error {
	cfg, err := cfg.validate()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg.Network != s.cfg.Network || cfg.Interface != s.cfg.Interface {
		return fmt.Errorf("updating dhcp server of network %q on %q: network and interface cannot change (to %q on %q) without a restart", s.cfg.Network, s.cfg.Interface, cfg.Network, cfg.Interface)
	}
	if reflect.DeepEqual(cfg, s.cfg) {
		return nil // the daemon's every pass hands the same configuration
	}
	s.setConfig(cfg)
	s.alloc.setConfig(cfg)
	s.log.Debug("dhcp configuration updated", "reservations", len(cfg.Reservations))
	return nil
}

// Leases returns the network's lease records as the server holds them,
// sorted by IP. Expired leases are included (see store.Lease.Expired): their
// guests get the address back unless the pool had to reclaim it.
func (s *Server) Leases() []store.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alloc.all()
}

// Pool reports how full the address pool is, for `kvmnet get leases` and
// metrics.
func (s *Server) Pool() PoolStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alloc.status(s.now())
}

// handle answers one client message that came in through in; the
// listener runs it on its own goroutine per packet.
func (s *Server) handle(conn net.PacketConn, in Ingress, m *dhcpv4.DHCPv4) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	reply, w := s.reply(m, in)
	if w == nil {
		s.send(conn, m, reply)
		return
	}
	select {
	case <-w.commit.Done():
		s.finish(conn, m, reply, w)
		return
	default:
	}
	select {
	case s.waiting <- struct{}{}:
		// The reply waits for the disk on a goroutine of its own, so
		// the listener's slot (see maxInflight) is free for the
		// requests that come in meanwhile: those join the next group
		// commit. Past maxWaiting, the slot is held, and the listener
		// drops what it cannot take.
		s.inflight.Add(1)
		go func() {
			defer func() { <-s.waiting; s.inflight.Done() }()
			s.finish(conn, m, reply, w)
		}()
		return
	default:
	}
	s.finish(conn, m, reply, w)
}

// maxWaiting bounds the replies waiting for their write to reach the disk.
const maxWaiting = 4096

// finish sends reply once its write w is on disk; none when the write
// failed.
func (s *Server) finish(conn net.PacketConn, m, reply *dhcpv4.DHCPv4, w *write) {
	if err := w.commit.Wait(); err != nil {
		w.failed(s, err)
		return
	}
	s.send(conn, m, reply)
}

// send sends reply to m, if any. An ACK that grants an address first runs
// onACK.
func (s *Server) send(conn net.PacketConn, m, reply *dhcpv4.DHCPv4) {
	if reply == nil {
		return
	}
	if s.onACK != nil && reply.MessageType() == dhcpv4.MessageTypeAck && !reply.YourIPAddr.IsUnspecified() {
		s.onACK(m.ClientHWAddr.String())
	}
	dst := replyAddr(m, reply)
	if _, err := conn.WriteTo(reply.ToBytes(), dst); err != nil {
		s.log.Warn("sending dhcp reply failed", "type", reply.MessageType().String(), "mac", m.ClientHWAddr.String(), "to", dst.String(), "err", err)
	}
}

// write is a change of leases on its way to disk, which the reply to the
// request that made it waits for.
type write struct {
	commit *store.LeaseCommit
	// failed runs when the write failed; the reply is not sent.
	failed func(s *Server, err error)
}

// reply works out the answer to m, which came in through in, or nil for
// none, and the write of leases that must be on disk before it is sent,
// if any.
func (s *Server) reply(m *dhcpv4.DHCPv4, in Ingress) (*dhcpv4.DHCPv4, *write) {
	// kvmnet only serves Ethernet guests directly on its bridge.
	if m.OpCode != dhcpv4.OpcodeBootRequest || m.HWType != iana.HWTypeEthernet || len(m.ClientHWAddr) != 6 {
		return nil, nil
	}
	mac := m.ClientHWAddr.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !s.forUs(in.Dst) {
		return nil, nil
	}
	if why := s.admit(m, in, now); why != "" {
		s.refuse(m, in, why, now)
		return nil, nil
	}
	// RELEASE and DECLINE name the server they are meant for; another
	// server's lease is none of our business.
	if t := m.MessageType(); t == dhcpv4.MessageTypeRelease || t == dhcpv4.MessageTypeDecline {
		if sid := addr4(m.ServerIdentifier()); sid.IsValid() && sid != s.cfg.ServerIP {
			return nil, nil
		}
	}
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(m, in, mac, now), nil
	case dhcpv4.MessageTypeRequest:
		return s.request(m, in, mac, now)
	case dhcpv4.MessageTypeRelease:
		return nil, s.release(m, in, mac, now)
	case dhcpv4.MessageTypeDecline:
		return nil, s.decline(m, in, mac, now)
	case dhcpv4.MessageTypeInform:
		return s.inform(m), nil
	}
	return nil, nil
}

func (s *Server) discover(m *dhcpv4.DHCPv4, in Ingress, mac string, now time.Time) *dhcpv4.DHCPv4 {
	ip, err := s.alloc.discover(mac, addr4(m.RequestedIPAddress()), now)
	if errors.Is(err, errExhausted) {
		// No OFFER: the client keeps trying and gets an address as soon
		// as one is released or expires.
		if now.Sub(s.lastExhausted) >= exhaustedLogEvery {
			s.lastExhausted = now
			st := s.alloc.status(now)
			s.log.Warn("dhcp pool exhausted, not answering", "mac", mac, "pool_size", st.Size, "range", s.cfg.RangeStart.String()+"-"+s.cfg.RangeEnd.String())
		}
		return nil
	}
	s.log.Debug("dhcp offer", "mac", mac, "ip", ip, "port", in.Port)
	s.learn(mac, in, now)
	return s.build(m, dhcpv4.MessageTypeOffer, ip, mac)
}

func (s *Server) request(m *dhcpv4.DHCPv4, in Ingress, mac string, now time.Time) (*dhcpv4.DHCPv4, *write) {
	if sid := addr4(m.ServerIdentifier()); sid.IsValid() && sid != s.cfg.ServerIP {
		// SELECTING state, and the client took another server's offer.
		s.alloc.forgetOffer(mac)
		return nil, nil
	}
	// SELECTING and INIT-REBOOT clients name the address in option 50;
	// RENEWING and REBINDING ones have it in ciaddr (RFC 2131 4.3.2).
	ip := addr4(m.RequestedIPAddress())
	if !ip.IsValid() {
		ip = addr4(m.ClientIPAddr)
	}
	if !ip.IsValid() {
		return nil, nil
	}
	// We are the only DHCP server on our bridge, so we are authoritative:
	// a client asking for an address it may not have is told so at once
	// (NAK) rather than left to time out, as dnsmasq --dhcp-authoritative
	// does.
	if !s.alloc.canLease(mac, ip, now) {
		s.log.Debug("dhcp nak", "mac", mac, "requested", ip)
		return s.nak(m), nil
	}
	// The lease is taken in memory at once, so requests decided while
	// it is written see it, and written with the reclaimed record's
	// removal, if any, in one group commit; the ACK waits for that commit.
	l := s.alloc.lease(mac, ip, hostname(m), now)
	prev, had := s.alloc.leases[mac]
	s.learn(mac, in, now)
	displaced, u := s.alloc.commit(l)
	ops := []store.LeaseOp{{Lease: l}}
	if displaced != "" {
		ops = append(ops, store.LeaseOp{Lease: store.Lease{Network: s.cfg.Network, MAC: displaced}, Delete: true})
	}
	w := &write{commit: s.leases.QueueLeases(ops...), failed: func(s *Server, err error) {
		// No ACK for a lease we could not record: a restart would hand
		// the address to someone else. The client retries.
		s.log.Error("storing dhcp lease failed, not acknowledging (is the state dir's disk full or failing?)", "mac", mac, "ip", ip, "err", err)
		s.mu.Lock()
		s.alloc.rollback(u)
		s.mu.Unlock()
	}}
	if displaced != "" {
		s.log.Info("dhcp reclaimed address", "ip", ip, "from", displaced, "to", mac)
	}
	if !had || prev.IP != ip || prev.Expired(now) {
		s.log.Info("dhcp lease", "mac", mac, "ip", ip, "hostname", l.Hostname, "expiry", l.Expiry)
	} else {
		s.log.Debug("dhcp renew", "mac", mac, "ip", ip)
	}
	return s.build(m, dhcpv4.MessageTypeAck, ip, mac), w
}

func (s *Server) release(m *dhcpv4.DHCPv4, in Ingress, mac string, now time.Time) *write {
	l, ok := s.alloc.release(mac, addr4(m.ClientIPAddr), now)
	if !ok {
		s.refuse(m, in, ReasonNotHeld, now)
		return nil
	}
	s.log.Info("dhcp release", "mac", mac, "ip", l.IP)
	return &write{commit: s.leases.QueueLeases(store.LeaseOp{Lease: l}), failed: func(s *Server, err error) {
		s.log.Warn("storing released dhcp lease failed", "mac", mac, "ip", l.IP, "err", err)
	}}
}

func (s *Server) decline(m *dhcpv4.DHCPv4, in Ingress, mac string, now time.Time) *write {
	ip := addr4(m.RequestedIPAddress())
	if !ip.IsValid() {
		return nil
	}
	// Each port may decline a few addresses, then one per declineEvery:
	// a guest that finds every address it is given taken is broken or
	// hostile, and either way must not drain the pool.
	b := s.declines[in.Port]
	if b == nil {
		b = &bucket{tokens: declineBurst, at: now}
		s.declines[in.Port] = b
	}
	if !b.take(now) {
		s.refuse(m, in, ReasonDeclineRate, now)
		return nil
	}
	declined, removed := s.alloc.decline(mac, ip, now)
	if !declined {
		s.refuse(m, in, ReasonNotHeld, now)
		return nil
	}
	// Someone on the bridge uses an address of ours without a lease: the
	// admin should know.
	s.log.Warn("dhcp decline: address already in use on the network", "mac", mac, "ip", ip, "held_for", declineHold)
	if !removed {
		return nil
	}
	return &write{commit: s.leases.QueueLeases(store.LeaseOp{Lease: store.Lease{Network: s.cfg.Network, MAC: mac}, Delete: true}), failed: func(s *Server, err error) {
		s.log.Warn("deleting declined dhcp lease failed", "mac", mac, "ip", ip, "err", err)
	}}
}

// inform answers a client that configured its address by itself and only
// wants the other options (RFC 2131 4.3.5): an ACK without yiaddr and
// without lease times.
func (s *Server) inform(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if !addr4(m.ClientIPAddr).IsValid() {
		return nil
	}
	r, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithClientIP(m.ClientIPAddr),
	)
	if err != nil {
		return nil
	}
	s.options(r, "")
	return r
}

func (s *Server) nak(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP.AsSlice())),
	)
	if err != nil {
		return nil
	}
	// A relay must broadcast a NAK to the client, which may not have the
	// address it asked for (RFC 2131 4.3.2).
	if addr4(m.GatewayIPAddr).IsValid() {
		r.SetBroadcast()
	}
	return r
}

// build makes an OFFER or ACK of ip to the client of request m.
func (s *Server) build(m *dhcpv4.DHCPv4, typ dhcpv4.MessageType, ip netip.Addr, mac string) *dhcpv4.DHCPv4 {
	lt := s.cfg.LeaseTime
	r, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt)),
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lt/2)),
		dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lt*7/8)),
	)
	if err != nil {
		// Only fails when the random transaction ID cannot be read,
		// and replies copy the request's.
		return nil
	}
	if typ == dhcpv4.MessageTypeAck && !m.ClientIPAddr.IsUnspecified() {
		r.ClientIPAddr = m.ClientIPAddr
	}
	var host string
	if res, ok := s.alloc.reserved[mac]; ok {
		host = res.Hostname
	}
	s.options(r, host)
	return r
}

// options adds the network's options to reply r. They are sent whether or
// not the client asked for them: every option here is one a guest on a
// kvmnet network needs, and clients ignore what they do not use.
func (s *Server) options(r *dhcpv4.DHCPv4, host string) {
	c := &s.cfg
	r.UpdateOption(dhcpv4.OptServerIdentifier(c.ServerIP.AsSlice()))
	r.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(c.Subnet.Bits(), 32)))
	if c.Router.IsValid() {
		r.UpdateOption(dhcpv4.OptRouter(c.Router.AsSlice()))
	}
	if len(c.DNS) > 0 {
		ips := make([]net.IP, len(c.DNS))
		for i, d := range c.DNS {
			ips[i] = d.AsSlice()
		}
		r.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	if c.Domain != "" {
		r.UpdateOption(dhcpv4.OptDomainName(c.Domain))
	}
	if c.MTU != 0 {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(c.MTU))))
	}
	if host != "" {
		r.UpdateOption(dhcpv4.OptHostName(host))
	}
}

// replyAddr is where a reply goes, per RFC 2131 4.1: to the relay if any;
// a NAK is broadcast; to ciaddr when the client already has its address;
// otherwise broadcast. RFC 2131 allows unicast to yiaddr when the broadcast
// flag is clear, but that needs an ARP entry for an address the client does
// not have yet, which a UDP socket (all server4 gives us) cannot create;
// every client accepts the broadcast.
func replyAddr(req, reply *dhcpv4.DHCPv4) *net.UDPAddr {
	if gi := addr4(req.GatewayIPAddr); gi.IsValid() {
		return &net.UDPAddr{IP: gi.AsSlice(), Port: dhcpv4.ServerPort}
	}
	if reply.MessageType() != dhcpv4.MessageTypeNak {
		if ci := addr4(req.ClientIPAddr); ci.IsValid() {
			return &net.UDPAddr{IP: ci.AsSlice(), Port: dhcpv4.ClientPort}
		}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// addr4 converts a packet's address field; 0.0.0.0 and nil give the zero
// Addr.
func addr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// hostname returns the client's host name option, cut down to what a DNS
// label may hold, for display.
func hostname(m *dhcpv4.DHCPv4) string {
	h := m.HostName()
	h, _, _ = strings.Cut(h, ".")
	var b strings.Builder
	for _, r := range h {
		if r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			b.WriteRune(r)
		}
		if b.Len() == 63 {
			break
		}
	}
	return strings.ToLower(b.String())
}
