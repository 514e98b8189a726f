package model

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Network returns the network called name, or nil.
func (c *Config) Network(name string) *Network {
	for i := range c.Networks {
		if c.Networks[i].Name == name {
			return &c.Networks[i]
		}
	}
	return nil
}

// Ports returns the VM interfaces on the network called network, in file
// order (VMs in order, and each VM's interfaces in order). Iface points
// into c.
func (c *Config) Ports(network string) []Port {
	var out []Port
	for i := range c.VMs {
		vm := &c.VMs[i]
		for j := range vm.Interfaces {
			if vm.Interfaces[j].Network == network {
				out = append(out, Port{VM: vm.Name, Index: j, Iface: &vm.Interfaces[j]})
			}
		}
	}
	return out
}

// BackendLinux is the default backend: bridges, taps and nftables of
// this host's kernel.
const BackendLinux = "linux"

// Backends returns the backends c's networks name, sorted, linux first
// when any network uses it.
func (c *Config) Backends() []string {
	var out []string
	for _, n := range c.Networks {
		if !slices.Contains(out, n.Backend) {
			out = append(out, n.Backend)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == BackendLinux:
			return -1
		case b == BackendLinux:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// ForBackend returns the part of c a backend carries: its networks, and
// the VMs with only their interfaces on those networks (VMs left with
// none are left out). Messages about the part still name the places in
// the user's file (see Errorf). c is not changed.
func (c *Config) ForBackend(name string) *Config {
	if !slices.ContainsFunc(c.Networks, func(n Network) bool { return !isBackend(n, name) }) {
		return c // all of it: the daemon asks on every new desired state
	}
	out := *c
	out.Networks, out.VMs = nil, nil
	out.Part = &Part{}
	mine := map[string]bool{}
	for i, n := range c.Networks {
		if isBackend(n, name) {
			out.Networks = append(out.Networks, n)
			out.Part.networks = append(out.Part.networks, c.originNetwork(i))
			mine[n.Name] = true
		}
	}
	for i, vm := range c.VMs {
		v := vm
		v.Interfaces = nil
		var ifcs []int
		for j, ifc := range vm.Interfaces {
			if mine[ifc.Network] {
				v.Interfaces = append(v.Interfaces, ifc)
				ifcs = append(ifcs, c.originInterface(i, j))
			}
		}
		if len(v.Interfaces) > 0 {
			out.VMs = append(out.VMs, v)
			out.Part.vms = append(out.Part.vms, c.originVM(i))
			out.Part.interfaces = append(out.Part.interfaces, ifcs)
		}
	}
	return &out
}

// isBackend reports whether n is carried by backend name.
func isBackend(n Network, name string) bool {
	return n.Backend == name || (n.Backend == "" && name == BackendLinux)
}

// Part maps the indexes of a part of a Config (ForBackend) to those of
// the file it came from.
type Part struct {
	networks, vms []int
	interfaces    [][]int
}

// Equal reports true, as Positions.Equal does: where a part came from is
// not what it says.
func (p *Part) Equal(*Part) bool { return true }

func (c *Config) originNetwork(i int) int {
	if c.Part == nil {
		return i
	}
	return c.Part.networks[i]
}

func (c *Config) originVM(i int) int {
	if c.Part == nil {
		return i
	}
	return c.Part.vms[i]
}

func (c *Config) originInterface(vm, i int) int {
	if c.Part == nil {
		return i
	}
	return c.Part.interfaces[vm][i]
}

var indexedPath = regexp.MustCompile(`^(networks|vms)\[(\d+)\](\.interfaces\[(\d+)\])?`)

// originPath rewrites a path of a part into the path of the file.
func (c *Config) originPath(path string) string {
	if c.Part == nil {
		return path
	}
	m := indexedPath.FindStringSubmatchIndex(path)
	if m == nil {
		return path
	}
	i, _ := strconv.Atoi(path[m[4]:m[5]])
	if path[m[2]:m[3]] == "networks" {
		return fmt.Sprintf("networks[%d]", c.originNetwork(i)) + path[m[5]+1:]
	}
	out := fmt.Sprintf("vms[%d]", c.originVM(i))
	if m[8] >= 0 {
		j, _ := strconv.Atoi(path[m[8]:m[9]])
		out += fmt.Sprintf(".interfaces[%d]", c.originInterface(i, j))
		return out + path[m[9]+1:]
	}
	return out + path[m[5]+1:]
}
