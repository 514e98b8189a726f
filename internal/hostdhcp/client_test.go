package hostdhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// These tests run the state machine against fakeHost, a kernel and a LAN
// in memory, so they need neither root nor a DHCP server. The root tests
// in hostdhcp_linux_test.go run the same against dnsmasq.

var (
	fakeMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	fakeServer = netip.MustParseAddr("192.168.1.1")
)

// sent is one message the client sent, as the fake LAN saw it.
type sent struct {
	Type      string
	Dst       string
	CIAddr    string
	Requested string
	Broadcast bool
}

// fakeHost records address changes and answers every message with serve.
type fakeHost struct {
	mu      sync.Mutex
	missing bool
	ops     []string        // "replace P brd B", "del P"
	lifes   []time.Duration // lifetime of each replace
	msgs    []sent
	serve   func(req *dhcpv4.DHCPv4, dst netip.Addr) *dhcpv4.DHCPv4
}

func (h *fakeHost) link(name string) (net.HardwareAddr, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.missing {
		return nil, false, fmt.Errorf("looking up %q: %w", name, errNoLink)
	}
	return fakeMAC, true, nil
}

func (h *fakeHost) listen(string) (net.PacketConn, error) {
	return &fakeConn{h: h, replies: make(chan []byte, 16), wake: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

func (h *fakeHost) replaceAddr(_ string, p netip.Prefix, brd netip.Addr, life time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, fmt.Sprintf("replace %s brd %s", p, brd))
	h.lifes = append(h.lifes, life)
	return nil
}

func (h *fakeHost) delAddr(_ string, p netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, "del "+p.String())
	return nil
}

func (h *fakeHost) defaultGateway(string) (netip.Addr, error) { return fakeServer, nil }

func (h *fakeHost) snapshot() ([]string, []time.Duration, []sent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ops...), append([]time.Duration(nil), h.lifes...), append([]sent(nil), h.msgs...)
}

// fakeConn hands each message to the host's serve and queues the answer.
type fakeConn struct {
	h       *fakeHost
	replies chan []byte
	wake    chan struct{}
	closed  chan struct{}
	once    sync.Once

	mu       sync.Mutex
	deadline time.Time
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	dst, _ := netip.AddrFromSlice(addr.(*net.UDPAddr).IP.To4())
	rq := ""
	if ip := m.RequestedIPAddress(); ip != nil {
		rq = ip.String()
	}
	c.h.mu.Lock()
	c.h.msgs = append(c.h.msgs, sent{m.MessageType().String(), dst.String(), m.ClientIPAddr.String(), rq, m.IsBroadcast()})
	serve := c.h.serve
	c.h.mu.Unlock()
	if r := serve(m, dst); r != nil {
		c.replies <- r.ToBytes()
	}
	return len(b), nil
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		d := c.deadline
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !d.IsZero() {
			wait := time.Until(d)
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case r := <-c.replies:
			return copy(b, r), &net.UDPAddr{IP: fakeServer.AsSlice(), Port: serverPort}, nil
		case <-timeout:
		case <-c.wake:
		case <-c.closed:
			return 0, nil, net.ErrClosed
		}
	}
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

func (c *fakeConn) Close() error                       { c.once.Do(func() { close(c.closed) }); return nil }
func (c *fakeConn) LocalAddr() net.Addr                { return &net.UDPAddr{Port: clientPort} }
func (c *fakeConn) SetDeadline(t time.Time) error      { return c.SetReadDeadline(t) }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

// server is a DHCP server for the fake LAN: each DISCOVER gets the next of
// offers, a REQUEST in SELECTING gets its requested address, and a RENEW
// or REBIND (ciaddr set) gets what extend says.
type server struct {
	mu     sync.Mutex
	offers []string
	lease  time.Duration
	// extend answers a REQUEST with ciaddr set: "ack", "nak" or ""
	// (silence); nil acks.
	extend func(dst netip.Addr) string
}

func (s *server) serve(req *dhcpv4.DHCPv4, dst netip.Addr) *dhcpv4.DHCPv4 {
	s.mu.Lock()
	defer s.mu.Unlock()
	reply := func(typ dhcpv4.MessageType, ip net.IP) *dhcpv4.DHCPv4 {
		r, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(ip),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(fakeServer.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.lease)),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
			dhcpv4.WithOption(dhcpv4.OptRouter(fakeServer.AsSlice())),
		)
		if err != nil {
			panic(err)
		}
		return r
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip := net.ParseIP(s.offers[0])
		if len(s.offers) > 1 {
			s.offers = s.offers[1:]
		}
		return reply(dhcpv4.MessageTypeOffer, ip)
	case dhcpv4.MessageTypeRequest:
		if req.ClientIPAddr.IsUnspecified() {
			return reply(dhcpv4.MessageTypeAck, req.RequestedIPAddress())
		}
		what := "ack"
		if s.extend != nil {
			what = s.extend(dst)
		}
		switch what {
		case "ack":
			return reply(dhcpv4.MessageTypeAck, req.ClientIPAddr)
		case "nak":
			return reply(dhcpv4.MessageTypeNak, net.IPv4zero)
		}
	}
	return nil
}

// start runs a client with cfg on a fake host serving srv until the test
// ends, and checks that Run returns nil.
func start(t *testing.T, cfg Config, srv *server, missing bool) (*Client, *fakeHost) {
	t.Helper()
	h := &fakeHost{serve: srv.serve, missing: missing}
	cfg.Iface, cfg.host = "br0", h
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.minAcquire = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancellation, want nil", err)
		}
		if st := c.Status().State; st != StateStopped {
			t.Errorf("state after Run returned: %s, want %s", st, StateStopped)
		}
	})
	return c, h
}

// waitStatus waits until cond accepts the client's status.
func waitStatus(t *testing.T, c *Client, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		st := c.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s; status %+v", what, st)
		}
		<-tick.C
	}
}

func TestClientReplacesWantedAddress(t *testing.T) {
	srv := &server{offers: []string{"192.168.1.5"}, lease: time.Hour}
	want := netip.MustParsePrefix("192.168.1.9/24")
	c, h := start(t, Config{Want: want, Hostname: "host1"}, srv, false)
	st := waitStatus(t, c, "lease", func(s Status) bool { return s.State == StateBound })

	if st.Address != netip.MustParsePrefix("192.168.1.5/24") || st.Server != fakeServer || st.Router != fakeServer {
		t.Errorf("status %+v, want 192.168.1.5/24 from and via %s", st, fakeServer)
	}
	if d := st.Expires.Sub(st.Obtained); d != time.Hour {
		t.Errorf("status says the lease runs %s, want 1h", d)
	}
	if d := st.Renew.Sub(st.Obtained); d != 30*time.Minute {
		t.Errorf("status says T1 is %s after the start, want 30m", d)
	}
	ops, lifes, msgs := h.snapshot()
	// Added before the old one is deleted, and put back after: deleting a
	// primary address takes its secondaries with it.
	wantOps := []string{
		"replace 192.168.1.5/24 brd 192.168.1.255",
		"del 192.168.1.9/24",
		"replace 192.168.1.5/24 brd 192.168.1.255",
	}
	if diff := cmp.Diff(wantOps, ops); diff != "" {
		t.Errorf("address changes (-want +got):\n%s", diff)
	}
	for _, l := range lifes {
		if l < time.Hour-5*time.Second || l > time.Hour {
			t.Errorf("lifetime %s, want about 1h", l)
		}
	}
	wantMsgs := []sent{
		{"DISCOVER", "255.255.255.255", "0.0.0.0", "192.168.1.9", true},
		{"REQUEST", "255.255.255.255", "0.0.0.0", "192.168.1.5", true},
	}
	if diff := cmp.Diff(wantMsgs, msgs); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

// TestClientRebinds: the server never answers unicast, so the RENEW at T1
// goes unanswered until T2, when a broadcast REBIND gets the lease
// extended. Lease: 2 s, T1 1 s, T2 1.75 s.
func TestClientRebinds(t *testing.T) {
	srv := &server{offers: []string{"192.168.1.5"}, lease: 2 * time.Second}
	srv.extend = func(dst netip.Addr) string {
		if dst == limitedBroadcast {
			return "ack"
		}
		return ""
	}
	c, h := start(t, Config{}, srv, false)
	first := waitStatus(t, c, "lease", func(s Status) bool { return s.State == StateBound })
	waitStatus(t, c, "rebound lease", func(s Status) bool { return s.Obtained.After(first.Obtained) })
	_, _, msgs := h.snapshot()
	wantMsgs := []sent{
		{"DISCOVER", "255.255.255.255", "0.0.0.0", "", true},
		{"REQUEST", "255.255.255.255", "0.0.0.0", "192.168.1.5", true},
		{"REQUEST", "192.168.1.1", "192.168.1.5", "", false},     // RENEW
		{"REQUEST", "255.255.255.255", "192.168.1.5", "", false}, // REBIND
	}
	if diff := cmp.Diff(wantMsgs, msgs[:min(len(msgs), 4)]); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if st := c.Status(); !strings.Contains(st.LastError, "renewing lease on 192.168.1.5/24: no answer from 192.168.1.1") {
		t.Errorf("last error %q, want the unanswered RENEW", st.LastError)
	}
}

// TestClientNAK: the RENEW is refused, and the next DISCOVER (asking for
// the refused address) gets another one, which replaces it.
func TestClientNAK(t *testing.T) {
	srv := &server{offers: []string{"192.168.1.5", "192.168.1.6"}, lease: time.Hour}
	srv.extend = func(netip.Addr) string { return "nak" }
	cfg := Config{renewAfter: func(time.Duration) time.Duration { return time.Second }}
	c, h := start(t, cfg, srv, false)
	st := waitStatus(t, c, "second lease", func(s Status) bool {
		return s.State == StateBound && s.Address.Addr() == netip.MustParseAddr("192.168.1.6")
	})
	if !strings.Contains(st.LastError, "refused the address (DHCPNAK)") {
		t.Errorf("last error %q, want the NAK", st.LastError)
	}
	ops, _, msgs := h.snapshot()
	wantOps := []string{
		"replace 192.168.1.5/24 brd 192.168.1.255", // bound
		"replace 192.168.1.5/24 brd 192.168.1.255", // restored before the RENEW
		"replace 192.168.1.6/24 brd 192.168.1.255",
		"del 192.168.1.5/24",
		"replace 192.168.1.6/24 brd 192.168.1.255",
	}
	if diff := cmp.Diff(wantOps, ops); diff != "" {
		t.Errorf("address changes (-want +got):\n%s", diff)
	}
	if len(msgs) < 4 || msgs[3].Type != "DISCOVER" || msgs[3].Requested != "192.168.1.5" {
		t.Errorf("messages %+v, want a DISCOVER asking for 192.168.1.5 after the NAK", msgs)
	}
}

// TestClientWaitsForInterface: a missing interface is reported, and the
// lease follows once it appears.
func TestClientWaitsForInterface(t *testing.T) {
	srv := &server{offers: []string{"192.168.1.5"}, lease: infiniteLease}
	c, h := start(t, Config{}, srv, true)
	st := waitStatus(t, c, "waiting state", func(s Status) bool { return s.State == StateWaiting })
	if !strings.Contains(st.LastError, `interface "br0" does not exist`) {
		t.Errorf("last error %q, want the missing interface", st.LastError)
	}
	h.mu.Lock()
	h.missing = false
	h.mu.Unlock()
	st = waitStatus(t, c, "lease", func(s Status) bool { return s.State == StateBound })
	if !st.Infinite || !st.Expires.IsZero() {
		t.Errorf("status %+v, want an infinite lease without expiry", st)
	}
	_, lifes, _ := h.snapshot()
	if diff := cmp.Diff([]time.Duration{0}, lifes); diff != "" {
		t.Errorf("lifetimes (-want +got), want 0 (forever):\n%s", diff)
	}
}
