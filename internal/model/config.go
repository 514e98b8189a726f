package model

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
