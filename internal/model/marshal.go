package model

import (
	"bytes"
	"strconv"
	"strings"
)

// Marshal writes c as a host.yaml that Parse accepts and that parses back to
// the same Config. Settings that are unset (zero) are left out; defaults
// that Parse filled in are written out, so the output shows everything the
// config means. Comments of the original file are not kept.
func Marshal(c *Config) ([]byte, error) {
	w := &writer{}
	if c.Host.Fastpath || c.Host.Conntrack != nil {
		w.line(0, "host:")
	}
	if c.Host.Fastpath {
		w.line(2, "fastpath: true")
	}
	if c.Host.Conntrack != nil {
		w.conntrack(c.Host.Conntrack)
	}
	if len(c.Networks) > 0 {
		w.line(0, "networks:")
		for i := range c.Networks {
			w.network(&c.Networks[i], c.Host)
		}
	}
	if len(c.VMs) > 0 {
		w.line(0, "vms:")
		for i := range c.VMs {
			w.vm(&c.VMs[i])
		}
	}
	return w.buf.Bytes(), nil
}

// writer emits block-style YAML: every mapping entry on its own line, list
// entries as "- key: value" with the rest of the mapping indented under it.
type writer struct {
	buf bytes.Buffer
	// dash makes the next key start a list entry.
	dash bool
}

func (w *writer) line(indent int, s string) {
	if w.dash {
		w.buf.WriteString(strings.Repeat(" ", indent-2) + "- ")
		w.dash = false
	} else {
		w.buf.WriteString(strings.Repeat(" ", indent))
	}
	w.buf.WriteString(s)
	w.buf.WriteByte('\n')
}

// kv writes "key: value" when value is not empty.
func (w *writer) kv(indent int, key, value string) {
	if value != "" {
		w.line(indent, key+": "+quote(value))
	}
}

func (w *writer) boolean(indent int, key string, b *bool) {
	if b != nil {
		w.line(indent, key+": "+strconv.FormatBool(*b))
	}
}

func (w *writer) integer(indent int, key string, i int) {
	if i != 0 {
		w.line(indent, key+": "+strconv.Itoa(i))
	}
}

// item starts a list entry whose keys are at indent.
func (w *writer) item() { w.dash = true }

func (w *writer) network(n *Network, host Host) {
	const in = 4
	w.item()
	w.kv(in, "name", n.Name)
	w.kv(in, "mode", string(n.Mode))
	if n.Backend != BackendLinux {
		w.kv(in, "backend", n.Backend)
	}
	w.kv(in, "bridge", n.Bridge)
	w.integer(in, "mtu", n.MTU)
	w.kv(in, "uplink", n.Uplink)
	w.kv(in, "hostAddress", string(n.HostAddress))
	if n.Subnet.IsValid() {
		w.kv(in, "subnet", n.Subnet.String())
	}
	if n.Gateway.IsValid() {
		w.kv(in, "gateway", n.Gateway.String())
	}
	if h := n.DHCP; h != nil && (h.Enabled != nil || h.Range != "" || h.Lease.Duration != 0) {
		w.line(in, "dhcp:")
		w.boolean(in+2, "enabled", h.Enabled)
		w.kv(in+2, "range", h.Range)
		if h.Lease.Duration != 0 {
			w.kv(in+2, "lease", h.Lease.String())
		}
	}
	if n.DNS.Enabled != nil || n.DNS.Domain != "" {
		w.line(in, "dns:")
		w.boolean(in+2, "enabled", n.DNS.Enabled)
		w.kv(in+2, "domain", n.DNS.Domain)
	}
	w.kv(in, "egress", n.Egress)
	if n.VLANs {
		w.line(in, "vlans: true")
	}
	if len(n.UplinkVLANs.Text) > 0 {
		w.line(in, "uplinkVlans: "+n.UplinkVLANs.Flow())
	}
	w.integer(in, "egressVlan", n.EgressVLAN)
	if len(n.Forwards) > 0 {
		w.line(in, "forwards:")
		for i := range n.Forwards {
			w.forward(in+4, &n.Forwards[i])
		}
	}
	if n.Mode == ModeNAT && n.Fastpath != host.Fastpath {
		// Only where the network differs from the host's default.
		w.line(in, "fastpath: "+strconv.FormatBool(n.Fastpath))
	}
	if w.dash {
		// A network with nothing set still needs its list entry.
		w.line(in, "{}")
	}
}

func (w *writer) forward(in int, f *Forward) {
	w.item()
	w.kv(in, "proto", f.Proto)
	w.kv(in, "port", f.Port)
	w.kv(in, "to", f.To)
	if len(f.From) > 0 {
		quoted := make([]string, len(f.From))
		for i, s := range f.From {
			quoted[i] = quote(s)
		}
		w.line(in, "from: ["+strings.Join(quoted, ", ")+"]")
	}
	w.kv(in, "listen", f.Listen)
	w.kv(in, "rateLimit", f.RateLimit)
	if f.Force {
		w.line(in, "force: true")
	}
	if w.dash {
		w.line(in, "{}")
	}
}

func (w *writer) vm(vm *VM) {
	const in = 4
	w.item()
	w.kv(in, "name", vm.Name)
	if len(vm.Interfaces) > 0 {
		w.line(in, "interfaces:")
		for i := range vm.Interfaces {
			w.iface(in+4, &vm.Interfaces[i])
		}
	}
	if w.dash {
		w.line(in, "{}")
	}
}

func (w *writer) iface(in int, i *Interface) {
	w.item()
	w.kv(in, "network", i.Network)
	w.kv(in, "mac", i.MAC)
	if i.IP.IsValid() {
		w.kv(in, "ip", i.IP.String())
	}
	w.kv(in, "tap", i.Tap)
	if i.CreateTap {
		w.line(in, "createTap: true")
	}
	w.integer(in, "queues", i.Queues)
	w.kv(in, "owner", i.Owner)
	s := i.Security
	if s.Spoofguard != nil || s.Isolated || s.MaxConnections != 0 || s.BroadcastLimit != "" || s.NewConnections != "" {
		w.line(in, "security:")
		w.boolean(in+2, "spoofguard", s.Spoofguard)
		if s.Isolated {
			w.line(in+2, "isolated: true")
		}
		w.integer(in+2, "maxConnections", s.MaxConnections)
		w.kv(in+2, "broadcastLimit", s.BroadcastLimit)
		w.kv(in+2, "newConnections", s.NewConnections)
	}
	if !i.QoS.Egress.IsZero() || !i.QoS.Ingress.IsZero() {
		w.line(in, "qos:")
		w.shape(in+2, "egress", i.QoS.Egress)
		w.shape(in+2, "ingress", i.QoS.Ingress)
	}
	if v := i.VLAN; v != nil {
		if v.Access {
			w.integer(in, "vlan", v.Untagged)
		} else {
			w.line(in, "vlan:")
			w.integer(in+2, "untagged", v.Untagged)
			if len(v.Tagged.Text) > 0 {
				w.line(in+2, "tagged: "+v.Tagged.Flow())
			}
		}
	}
	if w.dash {
		w.line(in, "{}")
	}
}

// isPlain reports whether YAML reads s back as the same plain string
// without quotes: it matches ^[A-Za-z0-9_./][A-Za-z0-9_./:-]*$ (written
// out rather than with the regexp engine, which took a third of the time
// Marshal takes for 10,000 forwards; kvmnet forward add writes the whole
// file). Everything else is double-quoted.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '/':
		case (c == ':' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

// quote writes s as a YAML scalar that reads back as s. Go's quoting is a
// subset of YAML's double-quoted style for what it produces.
func quote(s string) string {
	switch s {
	case "null", "Null", "NULL", "~":
		return strconv.Quote(s)
	}
	if isPlain(s) && !strings.HasSuffix(s, ":") {
		return s
	}
	return strconv.Quote(s)
}
