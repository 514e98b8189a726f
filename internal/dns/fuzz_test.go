package dns

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// recorder is an mdns.ResponseWriter that keeps what the handler writes.
type recorder struct {
	mdns.ResponseWriter
	remote net.Addr
	msgs   []*mdns.Msg
}

func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 53} }
func (r *recorder) WriteMsg(m *mdns.Msg) error {
	r.msgs = append(r.msgs, m)
	return nil
}

// FuzzServeDNS hands any message that unpacks, as the miekg server would,
// to the real handler of a server for dev.kvm that serves 10.0.0.0/24 and
// has no upstream (so nothing leaves the process), from a guest or from
// outside, over UDP or TCP. From outside: nothing over UDP, REFUSED and no
// data over TCP. From a guest: exactly one reply, to this query, that
// packs, fits the client's UDP size, and answers for the guests' names
// only with their addresses.
func FuzzServeDNS(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web1.dev.kvm.", mdns.TypeA}, {"db1.dev.kvm.", mdns.TypeANY}, {"10.0.0.10.in-addr.arpa.", mdns.TypePTR}, {"example.com.", mdns.TypeA}, {"dev.kvm.", mdns.TypeSOA}} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true, false)
		f.Add(b, false, false)
		f.Add(b, true, true)
	}
	s, err := newServer(Config{
		Network: "dev", Listen: netip.MustParseAddr("10.0.0.1"), Domain: "dev.kvm",
		Subnet: netip.MustParsePrefix("10.0.0.0/24"), Records: testRecords,
	}, nil, "/nonexistent/resolv.conf")
	if err != nil {
		f.Fatal(err)
	}
	addrs := map[string]bool{}
	for _, r := range testRecords() {
		addrs[r.IP.String()] = true
	}
	f.Fuzz(func(t *testing.T, data []byte, fromGuest, tcp bool) {
		r := new(mdns.Msg)
		if err := r.Unpack(data); err != nil {
			return
		}
		ip := net.IPv4(192, 0, 2, 9)
		if fromGuest {
			ip = net.IPv4(10, 0, 0, 10)
		}
		w := &recorder{remote: &net.UDPAddr{IP: ip, Port: 5353}}
		if tcp {
			w.remote = &net.TCPAddr{IP: ip, Port: 5353}
		}
		s.ServeDNS(w, r)
		if !fromGuest {
			switch {
			case !tcp && len(w.msgs) != 0:
				t.Fatalf("answered a stranger over udp: %v", w.msgs[0])
			case tcp && (len(w.msgs) != 1 || w.msgs[0].Rcode != mdns.RcodeRefused || len(w.msgs[0].Answer) != 0):
				t.Fatalf("stranger over tcp got %v, want one REFUSED", w.msgs)
			}
			return
		}
		if len(w.msgs) != 1 {
			t.Fatalf("%d replies, want 1", len(w.msgs))
		}
		m := w.msgs[0]
		if m.Id != r.Id || !m.Response {
			t.Fatalf("reply id %d response %v to query %d", m.Id, m.Response, r.Id)
		}
		packed, err := m.Pack()
		if err != nil {
			t.Fatalf("reply does not pack: %v", err)
		}
		if !tcp && len(m.Answer) > 0 {
			size := mdns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
				size = int(opt.UDPSize())
			}
			if len(packed) > size {
				t.Fatalf("udp reply of %d bytes, client takes %d", len(packed), size)
			}
		}
		for _, rr := range m.Answer {
			if len(r.Question) != 1 || !strings.EqualFold(rr.Header().Name, r.Question[0].Name) {
				t.Fatalf("answer %v is not for the question %v", rr, r.Question)
			}
			switch a := rr.(type) {
			case *mdns.A:
				if !addrs[a.A.String()] {
					t.Fatalf("answer %v: no guest has that address", rr)
				}
			case *mdns.AAAA:
				if !addrs[a.AAAA.String()] {
					t.Fatalf("answer %v: no guest has that address", rr)
				}
			case *mdns.PTR:
				if !mdns.IsSubDomain("dev.kvm.", a.Ptr) {
					t.Fatalf("answer %v: not a guest's name", rr)
				}
			case *mdns.SOA:
				if a.Hdr.Name != "dev.kvm." && !strings.EqualFold(a.Hdr.Name, "dev.kvm.") {
					t.Fatalf("answer %v: SOA of another zone", rr)
				}
			default:
				t.Fatalf("answer %v of a type the server never gives", rr)
			}
		}
	})
}
