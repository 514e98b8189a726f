package model

import (
	"fmt"
	"slices"
)

// Edit describes an imperative change to the desired state (`kvmnet
// forward add`, or the API request behind it) for messages. What the user
// gave is not a file, so a problem with it names the argument that gave the
// value instead of a line and column:
//
//	kvmnet forward add: --port: "70000": port 70000 is out of range (want 1 to 65535)
type Edit struct {
	// Name names the edit where a file name would stand, e.g. "kvmnet
	// forward add".
	Name string
	// Args maps the keys of a forward, spelt as in a file (network, proto,
	// port, to, from, listen, rateLimit, force), to the arguments that gave
	// them, e.g. "port" → "--port". A key without an entry is named as
	// itself.
	Args map[string]string
}

// arg names the argument behind key.
func (ed Edit) arg(key string) string {
	if a, ok := ed.Args[key]; ok {
		return a
	}
	return key
}

func (ed Edit) errorf(key, format string, args ...any) *Error {
	return &Error{File: ed.Name, Path: ed.arg(key), Msg: fmt.Sprintf(format, args...)}
}

// WithForward returns a copy of c with f added as the last forward of the
// network called network, once f has passed the checks Parse makes of a
// forward in a file, against the rest of c: its own syntax (proto, port,
// from, listen, rateLimit), its target (an address of the network, or a
// VM with an interface on it, and the port range it maps to), and the
// forwards that already claim its protocol and ports on the same listen
// addresses. The checks cost about as much as reading f, not c: an edit
// among 10,000 forwards does not parse or validate them again.
//
// c must have come out of Parse or an earlier edit, and is not changed.
// The copy shares with c what the edit leaves alone, so neither may be
// changed afterwards (Engine.Desired hands out configs on that condition).
//
// Problems come back as *Error values joined with errors.Join, worded as
// Parse words them; those about f name its arguments (see Edit). The
// copy's Positions lay f's arguments over c's, so the planner's checks of
// the new forward (a port the host listens on, a VM without ip:) name the
// arguments too; once the copy is stored as a document, call SetDoc.
//
// One difference from a file: when f claims what another forward already
// claims, the problem is reported on f, also when that forward belongs to
// a network later in the file (Parse reports the later of the two).
func (c *Config) WithForward(network string, f Forward, ed Edit) (*Config, error) {
	ni, err := c.forwardNetwork(network, ed)
	if err != nil {
		return nil, err
	}
	nc := *c
	nc.Networks = slices.Clone(c.Networks)
	n := &nc.Networks[ni]
	// Only what the user gives: the parsed forms are the checks' to fill.
	n.Forwards = append(slices.Clip(n.Forwards), Forward{
		Proto: f.Proto, Port: f.Port, To: f.To, From: slices.Clone(f.From),
		Listen: f.Listen, RateLimit: f.RateLimit, Force: f.Force,
	})
	j := len(n.Forwards) - 1
	nc.Positions = ed.positions(c.Positions, fmt.Sprintf("%s.forwards[%d]", netPath(ni), j), &n.Forwards[j])
	k := editChecker(&nc)
	k.forward(ni, j)
	k.forwardClaims(ni, j)
	if len(k.errs) > 0 {
		return nil, joinSorted(k.errs)
	}
	return &nc, nil
}

// WithoutForward returns a copy of c without the forwards of the network
// called network that forward port (as given to a forward: "8080" or
// "5000-5010") for proto (tcp when empty), on any listen address. It is an
// error when the network has none. c is not changed, and shares with the
// copy what the edit leaves alone (see WithForward). The copy has no
// positions until SetDoc: the forwards after the removed ones moved.
func (c *Config) WithoutForward(network, port, proto string, ed Edit) (*Config, error) {
	ni, err := c.forwardNetwork(network, ed)
	if err != nil {
		return nil, err
	}
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return nil, ed.errorf("proto", "%q is not a protocol (want tcp or udp)", proto)
	}
	first, last, prob := parsePortRange(port)
	if prob != "" {
		return nil, ed.errorf("port", "%q: %s", port, prob)
	}
	n := &c.Networks[ni]
	keep := make([]Forward, 0, len(n.Forwards))
	for _, f := range n.Forwards {
		if f.Proto == proto && f.PortFirst == first && f.PortLast == last {
			continue
		}
		keep = append(keep, f)
	}
	if len(keep) == len(n.Forwards) {
		have := make([]string, len(n.Forwards))
		for i, f := range n.Forwards {
			have[i] = f.Port + "/" + f.Proto
		}
		if len(have) == 0 {
			return nil, ed.errorf("port", "network %q has no forward of port %s/%s (it has no forwards)", network, port, proto)
		}
		return nil, ed.errorf("port", "network %q has no forward of port %s/%s (it has: %s)", network, port, proto, listNames(have))
	}
	nc := *c
	nc.Networks = slices.Clone(c.Networks)
	nc.Networks[ni].Forwards = keep
	nc.Positions = nil
	return &nc, nil
}

// SetDoc records that c is now stored as doc, under the name file (e.g.
// "kvmnet forward add"): Source becomes file, and positions are read from
// doc the first time a message needs one, by parsing it then. Messages are
// rare and edits are not, so an edit does not parse what it writes.
func (c *Config) SetDoc(file string, doc []byte) {
	c.Source = file
	c.Positions = &Positions{load: func() map[string]position {
		parsed, err := Parse(file, doc)
		if err != nil || parsed.Positions == nil {
			return nil // messages then go without line numbers
		}
		return parsed.Positions.m
	}}
}

// forwardNetwork returns the index of the network an edit of forwards
// names, which must be a nat network.
func (c *Config) forwardNetwork(network string, ed Edit) (int, error) {
	for i := range c.Networks {
		n := &c.Networks[i]
		if n.Name != network {
			continue
		}
		if n.Mode != ModeNAT {
			why := ""
			for _, x := range natOnly {
				if x.key == "forwards" {
					why = x.why
				}
			}
			return 0, ed.errorf("network", "network %q is %s: forwards are only for mode nat (%s)", network, n.Mode, why)
		}
		return i, nil
	}
	var names []string
	for _, n := range c.Networks {
		names = append(names, n.Name)
	}
	if len(names) == 0 {
		return 0, ed.errorf("network", "network %q does not exist (the desired state has no networks; apply a file that defines it first)", network)
	}
	return 0, ed.errorf("network", "network %q does not exist (networks: %s)", network, listNames(names))
}

// positions lays the settings of forward f, given by the edit at path,
// over base.
func (ed Edit) positions(base *Positions, path string, f *Forward) *Positions {
	p := &Positions{base: base, edit: ed.Name}
	p.set(path, position{byEdit: true})
	for _, kv := range []struct{ key, value string }{
		{"proto", f.Proto}, {"port", f.Port}, {"to", f.To}, {"listen", f.Listen}, {"rateLimit", f.RateLimit},
	} {
		p.set(path+"."+kv.key, position{byEdit: true, arg: ed.arg(kv.key), text: kv.value, null: kv.value == ""})
	}
	p.set(path+".force", position{byEdit: true, arg: ed.arg("force"), null: !f.Force})
	p.set(path+".from", position{byEdit: true, arg: ed.arg("from"), null: len(f.From) == 0})
	for i, s := range f.From {
		p.set(fmt.Sprintf("%s.from[%d]", path, i), position{byEdit: true, arg: ed.arg("from"), text: s})
	}
	return p
}

// editChecker returns a checker for an edit of c, which passed check
// before the edit: it knows c's networks and VMs as check left them,
// without checking them again.
func editChecker(c *Config) *checker {
	k := &checker{c: c, pos: c.Positions, nets: make(map[string]int, len(c.Networks)),
		vms: make(map[string]int, len(c.VMs)), okSubnet: map[int]bool{}}
	for i := range c.Networks {
		n := &c.Networks[i]
		if _, dup := k.nets[n.Name]; !dup {
			k.nets[n.Name] = i
		}
		if n.Mode == ModeNAT && n.Subnet.IsValid() && n.Gateway.IsValid() {
			k.okSubnet[i] = true
		}
	}
	for i := range c.VMs {
		if _, dup := k.vms[c.VMs[i].Name]; !dup {
			k.vms[c.VMs[i].Name] = i
		}
	}
	return k
}

// forwardClaims checks forward j of network i, which an edit added,
// against the forwards already there, as forwardsTogether checks a file
// (the others passed it among themselves): same egress, protocol and
// overlapping ports on the same listen address, an empty one being every
// address. Of several, it names the one forwardsTogether would meet first:
// the lowest first port, then the first in the file.
func (k *checker) forwardClaims(i, j int) {
	n := &k.c.Networks[i]
	f := &n.Forwards[j]
	if f.PortFirst == 0 || (f.Proto != "tcp" && f.Proto != "udp") {
		return // reported by forward
	}
	bi, bj := -1, -1
	for ei := range k.c.Networks {
		en := &k.c.Networks[ei]
		if en.Mode != ModeNAT || en.Egress != n.Egress {
			continue
		}
		for ej := range en.Forwards {
			g := &en.Forwards[ej]
			switch {
			case ei == i && ej == j,
				g.Proto != f.Proto || g.PortFirst == 0,
				g.PortLast < f.PortFirst || g.PortFirst > f.PortLast,
				f.ListenAddr.IsValid() && g.ListenAddr.IsValid() && f.ListenAddr != g.ListenAddr:
				continue
			}
			if bi < 0 || g.PortFirst < k.c.Networks[bi].Forwards[bj].PortFirst {
				bi, bj = ei, ej
			}
		}
	}
	if bi >= 0 {
		k.forwardClash(i, j, bi, bj)
	}
}
