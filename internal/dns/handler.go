package dns

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// ServeDNS answers one query; it implements mdns.Handler. The miekg server
// calls it on a goroutine per query.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	s.mu.RLock()
	cfg := s.cfg
	s.mu.RUnlock()

	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if !s.serves(cfg, w.RemoteAddr()) {
		// Not a guest of this network. A UDP source may be forged, so
		// nothing is sent back to it; over TCP the peer is real and
		// told so.
		if tcp {
			m := new(mdns.Msg)
			m.SetRcode(r, mdns.RcodeRefused)
			w.WriteMsg(m)
		}
		return
	}

	if r.Response || r.Opcode != mdns.OpcodeQuery || len(r.Question) != 1 {
		m := new(mdns.Msg)
		if r.Opcode != mdns.OpcodeQuery {
			m.SetRcode(r, mdns.RcodeNotImplemented)
		} else {
			m.SetRcode(r, mdns.RcodeFormatError)
		}
		w.WriteMsg(m)
		return
	}
	if m := answerLocal(cfg, r); m != nil {
		if !tcp {
			// Keep UDP answers within what the client can take; it
			// retries over TCP when it sees the TC bit.
			size := mdns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
				size = int(opt.UDPSize())
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
		return
	}
	w.WriteMsg(s.forward(cfg, r, tcp))
}

// serves reports whether the server answers a query from addr: the
// network's guests only (Config.Clients), which the device binding makes
// guests on its bridge.
func (s *Server) serves(cfg Config, addr net.Addr) bool {
	if !cfg.Clients.IsValid() {
		return true
	}
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.UDPAddr:
		ip = a.AddrPort().Addr()
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	}
	if ip = ip.Unmap(); ip.IsValid() && cfg.Clients.Contains(ip) {
		return true
	}
	// Atomics, not the server's lock: a flood from outside must not
	// queue the guests' queries behind it.
	s.refused.Add(1)
	now := time.Now().UnixNano()
	last := s.lastRefused.Load()
	if now-last >= int64(failLogEvery) && s.lastRefused.CompareAndSwap(last, now) {
		s.log.Warn("dns query from outside the network not answered", "from", addr.String(), "clients", cfg.Clients)
	}
	return false
}

// Refused returns how many queries came from outside Config.Clients and
// were not answered.
func (s *Server) Refused() uint64 { return s.refused.Load() }

// zone is the guests' names and addresses, built per query from
// Config.Records.
type zone struct {
	byName map[string][]netip.Addr // fully qualified, lowercase
	byAddr map[netip.Addr][]string
}

func buildZone(cfg Config) zone {
	z := zone{byName: map[string][]netip.Addr{}, byAddr: map[netip.Addr][]string{}}
	if cfg.Records == nil || cfg.Domain == "" {
		return z
	}
	for _, r := range cfg.Records() {
		name := strings.ToLower(strings.Trim(r.Name, "."))
		if name == "" || !r.IP.IsValid() {
			continue
		}
		fq := mdns.Fqdn(name)
		if !mdns.IsSubDomain(cfg.Domain, fq) {
			fq = mdns.Fqdn(name + "." + cfg.Domain)
		}
		if _, ok := mdns.IsDomainName(fq); !ok || fq == cfg.Domain {
			continue
		}
		ip := r.IP.Unmap()
		z.byName[fq] = append(z.byName[fq], ip)
		z.byAddr[ip] = append(z.byAddr[ip], fq)
	}
	return z
}

// answerLocal answers r when it is about the network's own names: names
// inside cfg.Domain and reverse names of the guests' addresses (or of
// cfg.Subnet). It returns nil for queries to forward.
func answerLocal(cfg Config, r *mdns.Msg) *mdns.Msg {
	q := r.Question[0]
	if cfg.Domain == "" || (q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY) {
		return nil
	}
	name := strings.ToLower(q.Name)
	if mdns.IsSubDomain(cfg.Domain, name) {
		return answerDomain(cfg, r, name, buildZone(cfg))
	}
	ip, ok := parseReverse(name)
	if !ok {
		return nil
	}
	z := buildZone(cfg)
	names, known := z.byAddr[ip]
	if !known && !(cfg.Subnet.IsValid() && cfg.Subnet.Contains(ip)) {
		return nil
	}
	m := reply(r)
	if !known {
		m.Rcode = mdns.RcodeNameError
		return m
	}
	if q.Qtype == mdns.TypePTR || q.Qtype == mdns.TypeANY {
		for _, n := range names {
			m.Answer = append(m.Answer, &mdns.PTR{Hdr: hdr(q.Name, mdns.TypePTR), Ptr: n})
		}
	}
	return m
}

func answerDomain(cfg Config, r *mdns.Msg, name string, z zone) *mdns.Msg {
	q := r.Question[0]
	m := reply(r)
	addrs, ok := z.byName[name]
	switch {
	case name == cfg.Domain:
		if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
			m.Answer = append(m.Answer, soa(cfg.Domain))
		}
	case !ok:
		m.Rcode = mdns.RcodeNameError
	default:
		for _, a := range addrs {
			switch {
			case a.Is4() && (q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY):
				m.Answer = append(m.Answer, &mdns.A{Hdr: hdr(q.Name, mdns.TypeA), A: a.AsSlice()})
			case a.Is6() && (q.Qtype == mdns.TypeAAAA || q.Qtype == mdns.TypeANY):
				m.Answer = append(m.Answer, &mdns.AAAA{Hdr: hdr(q.Name, mdns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	}
	// Negative answers carry the zone's SOA so resolvers can cache them
	// (RFC 2308).
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, soa(cfg.Domain))
	}
	return m
}

// reply starts an authoritative answer to r.
func reply(r *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	// We recurse for everything that is not ours.
	m.RecursionAvailable = true
	m.Compress = true
	return m
}

func hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: localTTL}
}

// soa is the synthetic SOA of the guests' domain. The numbers only matter to
// caches: the minimum (negative TTL) equals localTTL.
func soa(domain string) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     hdr(domain, mdns.TypeSOA),
		Ns:      "ns." + domain,
		Mbox:    "hostmaster." + domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  localTTL,
	}
}

// parseReverse turns a reverse name (4.3.2.1.in-addr.arpa. or the 32 nibbles
// of ip6.arpa.) into the address it stands for.
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, s := range l {
			n, err := strconv.ParseUint(s, 10, 8)
			if err != nil || (len(s) > 1 && s[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, s := range l {
			n, err := strconv.ParseUint(s, 16, 4)
			if err != nil || len(s) != 1 {
				return netip.Addr{}, false
			}
			// Nibbles come least significant first.
			pos := 31 - i
			b[pos/2] |= byte(n) << (4 * (1 - pos%2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// forward asks the upstreams in order and returns the first usable answer, or
// SERVFAIL when none gives one. It uses TCP when the client did, so truncated
// UDP answers are retried by the client over TCP end to end.
func (s *Server) forward(cfg Config, r *mdns.Msg, tcp bool) *mdns.Msg {
	c := &mdns.Client{Net: "udp", Timeout: cfg.Timeout}
	if tcp {
		c.Net = "tcp"
	}
	// A fresh ID towards the upstream, so a spoofed answer must guess it
	// rather than copy the guest's.
	q := r.Copy()
	q.Id = mdns.Id()
	var lastErr error
	for _, up := range cfg.Upstreams {
		resp, _, err := c.Exchange(q, up)
		if err != nil {
			lastErr = err
			continue
		}
		// REFUSED means this upstream will not serve us (an ACL);
		// another one may.
		if resp.Rcode == mdns.RcodeRefused {
			lastErr = errRefused(up)
			continue
		}
		resp.Id = r.Id
		return resp
	}
	s.noteFailure(cfg, r.Question[0].Name, lastErr)
	m := new(mdns.Msg)
	m.SetRcode(r, mdns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}

type errRefused string

func (e errRefused) Error() string { return "upstream " + string(e) + " refused the query" }

// noteFailure logs that no upstream answered, at most once per failLogEvery.
func (s *Server) noteFailure(cfg Config, name string, err error) {
	s.mu.Lock()
	now := time.Now()
	if now.Sub(s.lastFail) < failLogEvery {
		s.mu.Unlock()
		return
	}
	s.lastFail = now
	s.mu.Unlock()
	if len(cfg.Upstreams) == 0 {
		s.log.Warn("dns query failed: no upstream servers", "name", name)
		return
	}
	s.log.Warn("dns query failed: no upstream answered", "name", name, "upstreams", cfg.Upstreams, "err", err)
}
