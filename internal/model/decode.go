package model

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// The decoder walks the YAML syntax tree itself, rather than letting a
// reflection-based decoder fill the structs, so that it can report every
// unknown key and wrong value at once, each with its position, and record
// the position of every setting for later messages (Config.Errorf).
//
// It only reads: every value lands in the Config as written (strings as
// text, addresses and durations parsed), and the checks of what the values
// mean are in validate.go.

// Keys each mapping accepts, in the order messages list them.
var (
	topKeys       = []string{"host", "networks", "vms"}
	hostKeys      = []string{"fastpath", "conntrack"}
	networkKeys   = []string{"name", "mode", "backend", "bridge", "mtu", "uplink", "hostAddress", "subnet", "gateway", "dhcp", "dns", "egress", "forwards", "fastpath", "vlans", "uplinkVlans", "egressVlan"}
	dhcpKeys      = []string{"enabled", "range", "lease"}
	dnsKeys       = []string{"enabled", "domain"}
	forwardKeys   = []string{"proto", "port", "to", "from", "listen", "rateLimit", "force"}
	vmKeys        = []string{"name", "interfaces"}
	interfaceKeys = []string{"network", "mac", "ip", "tap", "createTap", "queues", "owner", "security", "qos", "vlan"}
	portVLANKeys  = []string{"untagged", "tagged"}
	securityKeys  = []string{"spoofguard", "isolated", "maxConnections", "broadcastLimit", "newConnections"}
	qosKeys       = []string{"egress", "ingress"}
	shapeKeys     = []string{"rate", "ceil", "burst", "mode"}
)

// maxMergeDepth bounds how deep "<<" merges may nest; it also stops a
// mapping that merges itself.
const maxMergeDepth = 8

// maxValues bounds how many list entries and mapping keys a file may expand
// to. Aliases let a small file stand for an enormous one ("billion laughs");
// a real host with ten thousand guests needs about a hundred thousand.
const maxValues = 500_000

type decoder struct {
	file    string
	pos     *Positions
	anchors map[string][]*ast.AnchorNode
	errs    []*Error
	// bad holds the paths whose value could not be read, and keyTrouble
	// the paths of mappings with unknown or malformed keys, so that the
	// checks that follow stay quiet about what is already reported.
	bad, keyTrouble map[string]bool
	// values counts list entries and mapping keys read, against maxValues.
	values int
}

func newDecoder(file string, tree *ast.File) *decoder {
	d := &decoder{file: file, pos: &Positions{}, anchors: map[string][]*ast.AnchorNode{},
		bad: map[string]bool{}, keyTrouble: map[string]bool{}}
	for _, doc := range tree.Docs {
		if doc != nil {
			d.collectAnchors(doc.Body, 0)
		}
	}
	return d
}

// collectAnchors records every "&name" of the tree, in document order, so
// that aliases can be resolved to the last anchor of that name before them.
func (d *decoder) collectAnchors(n ast.Node, depth int) {
	if n == nil || depth > 100 {
		return
	}
	switch n := n.(type) {
	case *ast.AnchorNode:
		if name := anchorName(n); name != "" {
			d.anchors[name] = append(d.anchors[name], n)
		}
		d.collectAnchors(n.Value, depth+1)
	case *ast.TagNode:
		d.collectAnchors(n.Value, depth+1)
	case *ast.MappingNode:
		for _, mv := range n.Values {
			d.collectAnchors(mv, depth+1)
		}
	case *ast.MappingValueNode:
		d.collectAnchors(n.Key, depth+1)
		d.collectAnchors(n.Value, depth+1)
	case *ast.SequenceNode:
		for _, v := range n.Values {
			d.collectAnchors(v, depth+1)
		}
	}
}

func anchorName(n *ast.AnchorNode) string {
	if n.Name == nil {
		return ""
	}
	return n.Name.GetToken().Value
}

// errorAt reports that the value at path could not be read.
func (d *decoder) errorAt(n ast.Node, path, format string, args ...any) {
	d.bad[path] = true
	d.report(n, path, format, args...)
}

// keyError reports a problem with a key of the mapping at path.
func (d *decoder) keyError(n ast.Node, path, format string, args ...any) {
	d.keyTrouble[path] = true
	d.report(n, path, format, args...)
}

func (d *decoder) report(n ast.Node, path, format string, args ...any) {
	line, col := nodePos(n)
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Column: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// nodePos returns where n starts: its first key for a block mapping, its
// token otherwise.
func nodePos(n ast.Node) (line, col int) {
	switch v := n.(type) {
	case nil:
		return 0, 0
	case *ast.MappingNode:
		if !v.IsFlowStyle && len(v.Values) > 0 && v.Values[0].Key != nil {
			return nodePos(v.Values[0].Key)
		}
	case *ast.MappingValueNode:
		if v.Key != nil {
			return nodePos(v.Key)
		}
	case *ast.AnchorNode:
		if v.Value != nil {
			return nodePos(v.Value)
		}
	case *ast.TagNode:
		if v.Value != nil {
			return nodePos(v.Value)
		}
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return 0, 0
	}
	return tk.Position.Line, tk.Position.Column
}

// resolve looks through anchors, tags and aliases to the node that holds
// the value. It returns nil for a null value or an alias to nowhere (which
// it reports).
func (d *decoder) resolve(path string, n ast.Node) ast.Node {
	r, bad, problem := d.follow(n)
	if problem != "" {
		d.errorAt(bad, path, "%s", problem)
	}
	return r
}

// peek resolves n without reporting anything.
func (d *decoder) peek(n ast.Node) ast.Node {
	r, _, _ := d.follow(n)
	return r
}

// follow does the work of resolve. When it cannot, it returns the node at
// fault and what is wrong.
func (d *decoder) follow(n ast.Node) (r, bad ast.Node, problem string) {
	for range 16 {
		switch v := n.(type) {
		case nil, *ast.NullNode:
			return nil, nil, ""
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		case *ast.AliasNode:
			target := d.anchorFor(v)
			if target == nil {
				name := ""
				if v.Value != nil {
					name = v.Value.GetToken().Value
				}
				return nil, v, fmt.Sprintf("alias *%s refers to no anchor &%s defined before it", name, name)
			}
			n = target.Value
		default:
			return n, nil, ""
		}
	}
	return nil, n, "aliases and tags nest too deep"
}

// anchorFor returns the last anchor named like alias that comes before it.
func (d *decoder) anchorFor(alias *ast.AliasNode) *ast.AnchorNode {
	if alias.Value == nil || alias.Start == nil || alias.Start.Position == nil {
		return nil
	}
	name := alias.Value.GetToken().Value
	var found *ast.AnchorNode
	for _, a := range d.anchors[name] {
		if a.Start != nil && a.Start.Position != nil && a.Start.Position.Offset < alias.Start.Position.Offset {
			found = a
		}
	}
	return found
}

// record notes where path is written and, for a single value, its text.
func (d *decoder) record(path string, n ast.Node) {
	line, col := nodePos(n)
	pos := position{line: line, col: col}
	switch v := d.peek(n).(type) {
	case nil:
		pos.null = true
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
	default:
		pos.text = scalarText(v)
	}
	d.pos.set(path, pos)
}

// scalarText is what the user wrote for a single value, without quotes.
func scalarText(n ast.Node) string {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		if v.Value != nil {
			return v.Value.Value
		}
		return ""
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// describe names what n is, for "want X, got Y" messages.
func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("the value %q", scalarText(n))
}

type entry struct {
	key   string
	kn    ast.Node // the key, for positions
	value ast.Node
}

// entries returns the key/value pairs of a mapping, with "<<" merges
// expanded: a merged key applies only when the mapping does not set it
// itself.
func (d *decoder) entries(path string, n ast.Node, depth int) []entry {
	var pairs []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.MappingNode:
		pairs = v.Values
	case *ast.MappingValueNode:
		pairs = []*ast.MappingValueNode{v}
	}
	var own, merged []entry
	for _, mv := range pairs {
		if mv == nil || mv.Key == nil {
			continue
		}
		if mv.Key.IsMergeKey() {
			if depth >= maxMergeDepth {
				d.keyError(mv.Key, path, "merges (<<) nest too deep")
				continue
			}
			for _, m := range d.mergeSources(path, mv.Value) {
				merged = append(merged, d.entries(path, m, depth+1)...)
			}
			continue
		}
		k := d.resolve(path, mv.Key)
		switch k.(type) {
		case nil:
			d.keyError(mv.Key, path, "a key is empty; write keys as plain words, e.g. name:")
			continue
		case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode, *ast.MappingKeyNode:
			d.keyError(mv.Key, path, "a key is %s; write keys as plain words, e.g. name:", describe(k))
			continue
		}
		own = append(own, entry{key: scalarText(k), kn: mv.Key, value: mv.Value})
	}
	for _, e := range merged {
		if !slices.ContainsFunc(own, func(o entry) bool { return o.key == e.key }) {
			own = append(own, e)
		}
	}
	return own
}

// mergeSources returns the mappings a "<<" merges: one mapping or a list of
// them.
func (d *decoder) mergeSources(path string, n ast.Node) []ast.Node {
	switch v := d.resolve(path, n).(type) {
	case nil:
		return nil
	case *ast.MappingNode, *ast.MappingValueNode:
		return []ast.Node{v}
	case *ast.SequenceNode:
		var out []ast.Node
		for _, x := range v.Values {
			switch m := d.resolve(path, x).(type) {
			case *ast.MappingNode, *ast.MappingValueNode:
				out = append(out, m)
			case nil:
			default:
				d.keyError(x, path, "<< merges mappings, got %s", describe(m))
			}
		}
		return out
	default:
		d.keyError(n, path, "<< merges a mapping or a list of mappings, got %s", describe(v))
		return nil
	}
}

// mapping reads the mapping at path: it records positions, reports unknown
// keys (what says where, e.g. "in a network") and calls set for each key
// that has a value. A null mapping is an empty one. hint is added to the
// message when n is not a mapping.
func (d *decoder) mapping(path string, n ast.Node, what, hint string, keys []string, set func(key, path string, v ast.Node)) {
	r := d.resolve(path, n)
	switch r.(type) {
	case nil:
		return
	case *ast.MappingNode, *ast.MappingValueNode:
	default:
		d.errorAt(n, path, "want a mapping (key: value lines)%s, got %s", hint, describe(r))
		return
	}
	for _, e := range d.entries(path, r, 0) {
		if !d.count(e.kn) {
			return
		}
		p := e.key
		if path != "" {
			p = path + "." + e.key
		}
		if !slices.Contains(keys, e.key) {
			d.keyError(e.kn, path, "unknown key %q %s%s (allowed: %s)", e.key, what, suggest(e.key, keys), strings.Join(keys, ", "))
			continue
		}
		d.record(p, e.value)
		if d.peek(e.value) == nil {
			// Resolve again to report an alias to nowhere.
			d.resolve(p, e.value)
			continue
		}
		set(e.key, p, e.value)
	}
}

// count counts one value against maxValues and reports false, once with
// an error, when the file has too many.
func (d *decoder) count(n ast.Node) bool {
	d.values++
	switch {
	case d.values < maxValues:
		return true
	case d.values == maxValues:
		why := "a host with ten thousand guest interfaces needs about a hundred thousand; split the host into smaller files or remove what it does not use"
		if len(d.anchors) > 0 {
			why = fmt.Sprintf("each alias (*name) counts every entry and key of its anchor's value again, and this file has %d anchors: an alias of a large anchor inside a list multiplies it; write the values out or use fewer aliases", len(d.anchors))
		}
		d.report(n, "", "the file holds more than %d list entries and mapping keys (counted with what aliases repeat), the most kvmnet reads: %s", maxValues, why)
		d.bad[""] = true
	}
	return false
}

// list reads the list at path and calls each for every entry.
func (d *decoder) list(path string, n ast.Node, hint string, each func(i int, path string, v ast.Node)) {
	r := d.resolve(path, n)
	switch v := r.(type) {
	case nil:
	case *ast.SequenceNode:
		for i, x := range v.Values {
			if !d.count(x) {
				return
			}
			p := fmt.Sprintf("%s[%d]", path, i)
			d.record(p, x)
			each(i, p, x)
		}
	default:
		d.errorAt(n, path, "want a list (lines starting with \"- \")%s, got %s", hint, describe(r))
	}
}

// scalar reads a single value as text.
func (d *decoder) scalar(path string, n ast.Node) (string, bool) {
	r := d.resolve(path, n)
	switch r.(type) {
	case nil:
		return "", false
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
		d.errorAt(n, path, "want a single value, got %s", describe(r))
		return "", false
	}
	return scalarText(r), true
}

func (d *decoder) str(path string, n ast.Node) string {
	s, _ := d.scalar(path, n)
	return s
}

func (d *decoder) boolean(path string, n ast.Node) bool {
	s, ok := d.scalar(path, n)
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "true":
		return true
	case "false":
		return false
	}
	d.errorAt(n, path, "%q is not a boolean (want true or false)", s)
	return false
}

func (d *decoder) boolPtr(path string, n ast.Node) *bool {
	b := d.boolean(path, n)
	return &b
}

// integer reads a whole number; example shows one in messages.
func (d *decoder) integer(path string, n ast.Node, example string) int {
	s, ok := d.scalar(path, n)
	if !ok {
		return 0
	}
	i, err := strconv.Atoi(s)
	switch {
	case errors.Is(err, strconv.ErrRange):
		d.errorAt(n, path, "%q is far too large (want e.g. %s)", s, example)
	case err != nil:
		d.errorAt(n, path, "%q is not a whole number (want e.g. %s)", s, example)
	}
	return i
}

func (d *decoder) prefix(path string, n ast.Node) netip.Prefix {
	s, ok := d.scalar(path, n)
	if !ok {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err == nil:
		return p
	case !strings.Contains(s, "/"):
		d.errorAt(n, path, "%q is not a CIDR: the prefix length is missing (want e.g. 192.168.100.0/24)", s)
	default:
		d.errorAt(n, path, "%q is not a valid IPv4 CIDR (want e.g. 192.168.100.0/24)", s)
	}
	return netip.Prefix{}
}

// addr reads an IP address; example shows one in messages.
func (d *decoder) addr(path string, n ast.Node, example string) netip.Addr {
	s, ok := d.scalar(path, n)
	if !ok {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.errorAt(n, path, "%q is not an IPv4 address (want e.g. %s)", s, example)
	}
	return a
}

func (d *decoder) duration(path string, n ast.Node) Duration {
	s, ok := d.scalar(path, n)
	if !ok {
		return Duration{}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errorAt(n, path, "%q is not a duration (want a number with a unit: s, m or h, e.g. 30m, 1h, 12h)", s)
	}
	return Duration{v}
}

// config reads the whole file.
func (d *decoder) config(body ast.Node) *Config {
	c := &Config{Source: d.file, Positions: d.pos}
	if r := d.resolve("", body); r != nil {
		if !isMapping(r) {
			d.errorAt(body, "", "the file must be a mapping with the keys networks: and vms:, got %s", describe(r))
			return c
		}
	}
	d.mapping("", body, "at the top level", "", topKeys, func(key, p string, v ast.Node) {
		switch key {
		case "host":
			d.mapping(p, v, "in host", "", hostKeys, func(key, p string, v ast.Node) {
				switch key {
				case "fastpath":
					c.Host.Fastpath = d.boolean(p, v)
				case "conntrack":
					c.Host.Conntrack = d.conntrack(p, v)
				}
			})
		case "networks":
			d.list(p, v, "", func(_ int, p string, v ast.Node) {
				c.Networks = append(c.Networks, d.network(p, v))
			})
		case "vms":
			d.list(p, v, "", func(_ int, p string, v ast.Node) {
				c.VMs = append(c.VMs, d.vm(p, v))
			})
		}
	})
	return c
}

func isMapping(n ast.Node) bool {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return true
	}
	return false
}

func (d *decoder) network(path string, n ast.Node) Network {
	var nw Network
	d.mapping(path, n, "in a network", "", networkKeys, func(key, p string, v ast.Node) {
		switch key {
		case "name":
			nw.Name = d.str(p, v)
		case "mode":
			nw.Mode = Mode(d.str(p, v))
		case "backend":
			nw.Backend = d.str(p, v)
		case "bridge":
			nw.Bridge = d.str(p, v)
		case "mtu":
			nw.MTU = d.integer(p, v, "1500")
		case "uplink":
			nw.Uplink = d.str(p, v)
		case "hostAddress":
			nw.HostAddress = HostAddress(d.str(p, v))
		case "subnet":
			nw.Subnet = d.prefix(p, v)
		case "gateway":
			nw.Gateway = d.addr(p, v, "192.168.100.1")
		case "dhcp":
			nw.DHCP = d.dhcp(p, v)
		case "dns":
			nw.DNS = d.dns(p, v)
		case "egress":
			nw.Egress = d.str(p, v)
		case "forwards":
			d.list(p, v, "", func(_ int, p string, v ast.Node) {
				nw.Forwards = append(nw.Forwards, d.forward(p, v))
			})
		case "vlans":
			nw.VLANs = d.boolean(p, v)
		case "uplinkVlans":
			nw.UplinkVLANs = d.vlanList(p, v)
		case "egressVlan":
			nw.EgressVLAN = d.vlanID(p, v)
		case "fastpath":
			nw.Fastpath = d.boolean(p, v)
		}
	})
	return nw
}

func (d *decoder) dhcp(path string, n ast.Node) *DHCP {
	h := &DHCP{}
	d.mapping(path, n, "in dhcp", " like {range: 192.168.100.100-192.168.100.199, lease: 1h} (to turn DHCP off: {enabled: false})", dhcpKeys, func(key, p string, v ast.Node) {
		switch key {
		case "enabled":
			h.Enabled = d.boolPtr(p, v)
		case "range":
			h.Range = d.str(p, v)
		case "lease":
			h.Lease = d.duration(p, v)
		}
	})
	return h
}

func (d *decoder) dns(path string, n ast.Node) DNS {
	var s DNS
	d.mapping(path, n, "in dns", " like {domain: dev.kvm} (to turn DNS off: {enabled: false})", dnsKeys, func(key, p string, v ast.Node) {
		switch key {
		case "enabled":
			s.Enabled = d.boolPtr(p, v)
		case "domain":
			s.Domain = d.str(p, v)
		}
	})
	return s
}

func (d *decoder) forward(path string, n ast.Node) Forward {
	var f Forward
	d.mapping(path, n, "in a forward", " like {port: 8080, to: web1:80}", forwardKeys, func(key, p string, v ast.Node) {
		switch key {
		case "proto":
			f.Proto = d.str(p, v)
		case "port":
			f.Port = d.str(p, v)
		case "to":
			f.To = d.str(p, v)
		case "from":
			// A single CIDR is taken as a list of one.
			if _, ok := d.peek(v).(*ast.SequenceNode); !ok {
				f.From = []string{d.str(p, v)}
				d.pos.set(p+"[0]", d.pos.m[p])
				return
			}
			d.list(p, v, "", func(_ int, p string, v ast.Node) {
				f.From = append(f.From, d.str(p, v))
			})
		case "listen":
			f.Listen = d.str(p, v)
		case "rateLimit":
			f.RateLimit = d.str(p, v)
		case "force":
			f.Force = d.boolean(p, v)
		}
	})
	return f
}

func (d *decoder) vm(path string, n ast.Node) VM {
	var vm VM
	d.mapping(path, n, "in a VM", "", vmKeys, func(key, p string, v ast.Node) {
		switch key {
		case "name":
			vm.Name = d.str(p, v)
		case "interfaces":
			d.list(p, v, "", func(_ int, p string, v ast.Node) {
				vm.Interfaces = append(vm.Interfaces, d.iface(p, v))
			})
		}
	})
	return vm
}

func (d *decoder) iface(path string, n ast.Node) Interface {
	var in Interface
	d.mapping(path, n, "in an interface", " like {network: dev, mac: 52:54:00:00:00:10}", interfaceKeys, func(key, p string, v ast.Node) {
		switch key {
		case "network":
			in.Network = d.str(p, v)
		case "mac":
			in.MAC = d.str(p, v)
		case "ip":
			in.IP = d.addr(p, v, "192.168.100.10")
		case "tap":
			in.Tap = d.str(p, v)
		case "createTap":
			in.CreateTap = d.boolean(p, v)
		case "queues":
			in.Queues = d.integer(p, v, "4")
		case "owner":
			in.Owner = d.str(p, v)
		case "security":
			in.Security = d.security(p, v)
		case "qos":
			in.QoS = d.qos(p, v)
		case "vlan":
			in.VLAN = d.portVLANs(p, v)
		}
	})
	return in
}

func (d *decoder) security(path string, n ast.Node) Security {
	var s Security
	d.mapping(path, n, "in security", " like {spoofguard: true, maxConnections: 4096}", securityKeys, func(key, p string, v ast.Node) {
		switch key {
		case "spoofguard":
			s.Spoofguard = d.boolPtr(p, v)
		case "isolated":
			s.Isolated = d.boolean(p, v)
		case "maxConnections":
			s.MaxConnections = d.integer(p, v, "4096")
		case "broadcastLimit":
			s.BroadcastLimit = d.str(p, v)
		case "newConnections":
			s.NewConnections = d.str(p, v)
		}
	})
	return s
}

func (d *decoder) qos(path string, n ast.Node) QoS {
	var q QoS
	d.mapping(path, n, "in qos", " like {egress: 100mbit, ingress: {rate: 100mbit, ceil: 200mbit}}", qosKeys, func(key, p string, v ast.Node) {
		switch key {
		case "egress":
			q.Egress = d.shape(p, v)
		case "ingress":
			q.Ingress = d.shape(p, v)
		}
	})
	return q
}

// shape reads one direction of qos: a rate alone, or a mapping.
func (d *decoder) shape(path string, n ast.Node) Shape {
	if !isMapping(d.peek(n)) {
		return Shape{Rate: d.str(path, n)}
	}
	var s Shape
	d.mapping(path, n, "in a qos direction", " like {rate: 100mbit, ceil: 200mbit, burst: 256kb}", shapeKeys, func(key, p string, v ast.Node) {
		switch key {
		case "rate":
			s.Rate = d.str(p, v)
		case "ceil":
			s.Ceil = d.str(p, v)
		case "burst":
			s.Burst = d.str(p, v)
		case "mode":
			s.Mode = d.str(p, v)
		}
	})
	return s
}

// suggest returns ` (did you mean "x"?)` for a key close to one of keys, or
// "".
func suggest(key string, keys []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", 3
	for _, k := range keys {
		if norm(k) == norm(key) {
			return fmt.Sprintf("; did you mean %q?", k)
		}
		if dist := editDistance(strings.ToLower(key), strings.ToLower(k)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
