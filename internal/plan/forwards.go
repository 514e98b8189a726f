package plan

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	"github.com/kvmnet/kvmnet/internal/model"
)

// forwards adds the elements of network ni's port forwards: one dnat4
// entry per listen address and port, the from: allow-list and the rate
// class. Listen addresses default to the egress interface's IPv4
// addresses as observed now; the daemon re-plans when they change.
func forwards(cfg *model.Config, ni int, egress, listenOn string, obs *Observed, elems Elements, classes map[RateClass]bool, p *Plan) error {
	n := &cfg.Networks[ni]
	var egressAddrs []netip.Addr
	for _, a := range obs.Links[listenOn].Addrs {
		if a.Addr().Is4() {
			egressAddrs = append(egressAddrs, a.Addr())
		}
	}
	for fi, f := range n.Forwards {
		// Built only for a message: 10,000 forwards are planned on
		// every edit.
		path := func() string { return fmt.Sprintf("networks[%d].forwards[%d]", ni, fi) }
		target := f.ToAddr
		if f.ToVM != "" {
			for _, port := range cfg.Ports(n.Name) {
				if port.VM == f.ToVM {
					target = port.Iface.IP
					break
				}
			}
			if !target.IsValid() {
				return cfg.Errorf(path()+".to", "forward to vm %q: its interface on network %q has no ip:, so the forward has no fixed target; reserve one with ip: on that interface", f.ToVM, n.Name)
			}
		}
		listens := egressAddrs
		if f.ListenAddr.IsValid() {
			listens = []netip.Addr{f.ListenAddr}
		}
		if len(listens) == 0 {
			p.Warnings = append(p.Warnings, fmt.Sprintf("network %q: forward of port %s/%s waits for an address: egress %q has no IPv4 address yet", n.Name, f.Port, f.Proto, egress))
			continue
		}
		var rc RateClass
		if f.RateLimit != "" {
			count, per, err := model.ParseRateLimit(f.RateLimit)
			if err != nil {
				return cfg.Errorf(path()+".rateLimit", "%v", err)
			}
			rc = RateClass{Count: count, Unit: "second"}
			if per.Minutes() == 1 {
				rc.Unit = "minute"
			}
			classes[rc] = true
		}
		// The elements are written out here rather than through
		// NewElement: ten thousand forwards are planned on every edit,
		// and one concatenation each is what that costs.
		to := valueSep + target.String() + fieldSep
		for _, l := range listens {
			for port := int(f.PortFirst); port <= int(f.PortLast); port++ {
				key := ForwardKey(l, f.Proto, uint16(port))
				tport := int(f.ToPortFirst) + port - int(f.PortFirst)
				elems[MapDNAT] = append(elems[MapDNAT], Element(key+to+strconv.Itoa(tport)))
				if len(f.FromPrefixes) > 0 {
					elems[SetFwdRestricted] = append(elems[SetFwdRestricted], Element(key))
					for _, pr := range f.FromPrefixes {
						elems[SetFwdFrom] = append(elems[SetFwdFrom], Element(key+fieldSep+prefixElem(pr)))
					}
				}
				if rc.Count > 0 {
					elems[rc.KeysSet()] = append(elems[rc.KeysSet()], Element(key))
				}
			}
		}
	}
	return nil
}

// ForwardKey is the normalised dnat4 key of a forward: LISTEN . PROTO . PORT.
func ForwardKey(listen netip.Addr, proto string, port uint16) string {
	b := make([]byte, 0, len("255.255.255.255 . tcp . 65535"))
	b = append(listen.AppendTo(b), fieldSep...)
	b = append(append(b, proto...), fieldSep...)
	return string(strconv.AppendUint(b, uint64(port), 10))
}

// prefixElem writes a prefix as nft prints it: a single address without /32.
func prefixElem(p netip.Prefix) string {
	p = p.Masked()
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// forwardFlow reads the flow of a dnat4 element (or a key ForwardKey
// wrote): its key's fields LISTEN, PROTO, PORT.
func forwardFlow(e Element) (Flow, bool) {
	parts := e.Key()
	if len(parts) != 3 {
		return Flow{}, false
	}
	addr, err := netip.ParseAddr(parts[0])
	if err != nil {
		return Flow{}, false
	}
	port, err := strconv.ParseUint(parts[2], 10, 16)
	if err != nil {
		return Flow{}, false
	}
	return Flow{Proto: parts[1], Addr: addr, Port: uint16(port)}, true
}

// revoked lists the forwards a change removes (or retargets), whose
// tracked connections must be cut: without that, established connections
// keep their translation and live on.
func revoked(have *TableState, ch *NftChange) []Flow {
	var gone []Element
	switch {
	case ch.Delete:
		gone = have.Sets[MapDNAT]
	case ch.Rebuild:
		want := map[Element]bool{}
		for _, e := range ch.Elements[MapDNAT] {
			want[e] = true
		}
		for _, e := range have.Sets[MapDNAT] {
			if !want[e] {
				gone = append(gone, e)
			}
		}
	default:
		gone = ch.Del[MapDNAT]
	}
	var flows []Flow
	for _, e := range gone {
		if f, ok := forwardFlow(e); ok {
			flows = append(flows, f)
		}
	}
	sort.Slice(flows, func(i, j int) bool { return flowLess(flows[i], flows[j]) })
	return flows
}

func flowLess(a, b Flow) bool {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c < 0
	}
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	return a.Port < b.Port
}

// checkConflicts refuses a new forward on a port the host itself listens
// on, naming the process, unless the forward says force: true. Forwards
// already in place are not checked again: the check is about the moment
// the port is taken away from the host.
func checkConflicts(cfg *model.Config, obs *Observed, ch *NftChange, listeners func(keep func(proto string, port uint16) bool) ([]Listener, error)) error {
	adding := ch.Add[MapDNAT]
	if ch.Rebuild {
		have := map[Element]bool{}
		for _, e := range obs.Table.Sets[MapDNAT] {
			have[e] = true
		}
		for _, e := range ch.Elements[MapDNAT] {
			if !have[e] {
				adding = append(adding, e)
			}
		}
	}
	if len(adding) == 0 {
		return nil
	}
	newKeys := map[Flow]bool{}
	newPorts := map[Flow]bool{}
	for _, e := range adding {
		if fl, ok := forwardFlow(e); ok {
			newKeys[fl] = true
			newPorts[Flow{Proto: fl.Proto, Port: fl.Port}] = true
		}
	}
	socks := obs.Listeners
	if listeners != nil {
		var err error
		socks, err = listeners(func(proto string, port uint16) bool { return newPorts[Flow{Proto: proto, Port: port}] })
		if err != nil {
			return err
		}
	}
	if len(socks) == 0 {
		return nil
	}
	for ni, n := range cfg.Networks {
		for fi, f := range n.Forwards {
			if f.Force {
				continue
			}
			for _, l := range socks {
				if l.Proto != f.Proto || l.Port < f.PortFirst || l.Port > f.PortLast {
					continue
				}
				for fl := range newKeys {
					if fl.Proto != l.Proto || fl.Port != l.Port || (!l.Addr.IsUnspecified() && l.Addr != fl.Addr) {
						continue
					}
					who := l.Process
					if who == "" {
						who = "a process"
					}
					return cfg.Errorf(fmt.Sprintf("networks[%d].forwards[%d].port", ni, fi),
						"port %d/%s is in use on the host: %s listens on %s; forward another port, or set force: true to take it (the host's service is then unreachable at %s)",
						l.Port, l.Proto, who, netip.AddrPortFrom(l.Addr, l.Port), fl.Addr)
				}
			}
		}
	}
	return nil
}
