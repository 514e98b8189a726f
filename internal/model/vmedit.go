package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Attach is one VM interface as an imperative edit gives it (`kvmnet vm
// attach`, POST /v1/vms/interfaces): the keys of an interface in a file,
// as the user wrote them.
type Attach struct {
	VM, Network, MAC, IP, Tap string
	CreateTap                 bool
	Queues                    int
	Owner                     string
}

// WithInterface returns a copy of c with the interface a attached to its
// VM (a new VM when c has none of that name), once it has passed the
// checks Parse makes of an interface in a file, against the rest of c: its
// own keys (network, mac, ip in the subnet and not the gateway, tap name,
// createTap's options) and what the other interfaces already claim (MAC,
// reserved address, tap, and the names of bridges, uplinks and egresses).
// As with WithForward, c is not changed, the copy shares with c what the
// edit leaves alone, problems name the edit's arguments (see Edit), and a
// problem of the new interface with an older one is reported on the new
// one.
func (c *Config) WithInterface(a Attach, ed Edit) (*Config, error) {
	nc := *c
	nc.VMs = slices.Clone(c.VMs)
	vi := slices.IndexFunc(nc.VMs, func(v VM) bool { return v.Name == a.VM })
	p := &Positions{base: c.Positions, edit: ed.Name}
	if vi < 0 {
		if !validName(a.VM) {
			return nil, ed.errorf("vm", "%q is not a valid VM name (%s)", a.VM, nameRule)
		}
		nc.VMs = append(nc.VMs, VM{Name: a.VM})
		vi = len(nc.VMs) - 1
		p.set(fmt.Sprintf("vms[%d]", vi), position{byEdit: true})
		p.set(fmt.Sprintf("vms[%d].name", vi), position{byEdit: true, arg: ed.arg("vm"), text: a.VM})
	}
	in := Interface{Network: a.Network, MAC: a.MAC, Tap: a.Tap, CreateTap: a.CreateTap, Queues: a.Queues, Owner: a.Owner}
	if a.IP != "" {
		ip, err := netip.ParseAddr(a.IP)
		if err != nil || !ip.Is4() {
			return nil, ed.errorf("ip", "%q is not an IPv4 address (e.g. 192.168.100.10)", a.IP)
		}
		in.IP = ip
	}
	vm := &nc.VMs[vi]
	vm.Interfaces = append(slices.Clip(vm.Interfaces), in)
	i := len(vm.Interfaces) - 1
	path := ifacePath(vi, i)
	p.set(path, position{byEdit: true})
	for _, kv := range []struct{ key, value string }{
		{"network", a.Network}, {"mac", a.MAC}, {"ip", a.IP}, {"tap", a.Tap}, {"owner", a.Owner},
	} {
		p.set(path+"."+kv.key, position{byEdit: true, arg: ed.arg(kv.key), text: kv.value, null: kv.value == ""})
	}
	p.set(path+".createTap", position{byEdit: true, arg: ed.arg("createTap"), null: !a.CreateTap})
	p.set(path+".queues", position{byEdit: true, arg: ed.arg("queues"), text: strconv.Itoa(a.Queues), null: a.Queues == 0})
	nc.Positions = p
	k := editChecker(&nc)
	k.iface(vi, i, true)
	if len(k.errs) == 0 {
		k.interfaceClaims(vi, i)
	}
	if len(k.errs) > 0 {
		return nil, joinSorted(k.errs)
	}
	return &nc, nil
}

// interfaceClaims checks interface i of VM vi, which an edit added,
// against every other interface and the networks' devices, as
// interfacesTogether checks a file.
func (k *checker) interfaceClaims(vi, i int) {
	in := &k.c.VMs[vi].Interfaces[i]
	p := ifacePath(vi, i)
	if dev, clash := k.networkDevices()[in.Tap]; clash {
		k.errorf(p+".tap", "tap %q is %s; set tap: to a name no bridge, uplink or egress uses", in.Tap, dev)
	}
	for ovi := range k.c.VMs {
		ovm := &k.c.VMs[ovi]
		for oi := range ovm.Interfaces {
			if ovi == vi && oi == i {
				continue
			}
			o := &ovm.Interfaces[oi]
			other := fmt.Sprintf("VM %q (%s)", ovm.Name, k.lineOf(ifacePath(ovi, oi)))
			if o.HWAddr == in.HWAddr {
				k.errorf(p+".mac", "%q is already the MAC of %s; every NIC needs its own MAC", in.MAC, other)
			}
			if in.IP.IsValid() && o.IP == in.IP {
				k.errorf(p+".ip", "%q is already reserved for %s; every interface needs its own address", in.IP, other)
			}
			if o.Tap == in.Tap {
				what := fmt.Sprintf("tap %q", in.Tap)
				if !k.pos.has(p + ".tap") {
					what = fmt.Sprintf("the default tap name %q (VM name + \"-\" + interface index)", in.Tap)
				}
				k.errorf(p+".tap", "%s is already the tap of %s; give the interface its own tap", what, other)
			}
		}
	}
}

// WithoutInterface returns a copy of c without the interface of VM vm
// whose tap is tap, or without all of vm's interfaces when tap is "";
// a VM left with no interface leaves the desired state. It is an error
// when vm or the tap does not exist, and when a forward goes to vm
// through an interface the edit removes (remove the forward first). c is
// not changed; the copy has no positions until SetDoc.
func (c *Config) WithoutInterface(vm, tap string, ed Edit) (*Config, error) {
	vi := slices.IndexFunc(c.VMs, func(v VM) bool { return v.Name == vm })
	if vi < 0 {
		names := make([]string, 0, len(c.VMs))
		for _, v := range c.VMs {
			names = append(names, v.Name)
		}
		if len(names) == 0 {
			return nil, ed.errorf("vm", "VM %q does not exist (the desired state has no VMs)", vm)
		}
		return nil, ed.errorf("vm", "VM %q does not exist (VMs: %s)", vm, listNames(names))
	}
	var keep []Interface
	var taps []string
	for _, in := range c.VMs[vi].Interfaces {
		taps = append(taps, in.Tap)
		if tap != "" && in.Tap != tap {
			keep = append(keep, in)
		}
	}
	if len(keep) == len(c.VMs[vi].Interfaces) {
		return nil, ed.errorf("tap", "VM %q has no interface with tap %q (its taps: %s)", vm, tap, listNames(taps))
	}
	for _, n := range c.Networks {
		for _, f := range n.Forwards {
			if f.ToVM != vm || slices.ContainsFunc(keep, func(in Interface) bool { return in.Network == n.Name && in.IP == f.ToAddr }) {
				continue
			}
			return nil, ed.errorf("vm", "forward %s/%s of network %q goes to VM %q through the interface this removes; remove the forward first (kvmnet forward rm --network %s --port %s --proto %s)",
				f.Port, f.Proto, n.Name, vm, n.Name, f.Port, f.Proto)
		}
	}
	nc := *c
	nc.VMs = slices.Clone(c.VMs)
	if len(keep) == 0 {
		nc.VMs = slices.Delete(nc.VMs, vi, vi+1)
	} else {
		nc.VMs[vi].Interfaces = keep
	}
	nc.Positions = nil
	return &nc, nil
}
