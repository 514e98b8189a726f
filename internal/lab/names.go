package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/kvmnet/kvmnet/internal/model"
)

// DefaultPrefix names the lab when no prefix is given.
const DefaultPrefix = "kvl"

// maxPrefixLen keeps namespace names short enough to read in `ip netns list`.
const maxPrefixLen = 10

// Nodes of every lab besides the VMs. Their namespaces are PREFIX-NODE; a VM's
// is PREFIX-vm-NAME.
const (
	// NodeLAN is the LAN router: bridge, DHCP server and DNS of the
	// "physical" network, and the gateway to the internet host.
	NodeLAN = "lan"
	// NodeInet is the "internet" host behind the router.
	NodeInet = "inet"
	// NodeHost is the KVM host where kvmnet runs (`kvmnet --netns PREFIX-host`).
	NodeHost = "host"
)

// Addresses of the lab. They are the same in every lab: namespaces keep two
// labs apart, so addresses may repeat.
const (
	// LANSubnet is the "physical" LAN of the host.
	LANSubnet = "172.30.0.0/24"
	// RouterLAN is the router's address on the LAN (gateway, DHCP, DNS).
	RouterLAN = "172.30.0.1"
	// HostLAN is the KVM host's static address on the LAN, on HostUplink.
	HostLAN = "172.30.0.2"
	// DHCPFirst and DHCPLast bound the LAN's DHCP pool (bridged guests and
	// `hostAddress: dhcp` take addresses from it).
	DHCPFirst = "172.30.0.100"
	DHCPLast  = "172.30.0.199"
	// InetSubnet links the router and the internet host.
	InetSubnet = "203.0.113.0/24"
	// RouterInet is the router's address towards the internet host.
	RouterInet = "203.0.113.1"
	// Internet is the internet host's address.
	Internet = "203.0.113.10"
	// InternetName resolves to Internet through the LAN's DNS.
	InternetName = "internet.lab"
	// RouterName resolves to RouterLAN through the LAN's DNS.
	RouterName = "router.lab"
	// HostUplink is the host's NIC on the LAN: the `uplink:` of bridged
	// networks and the egress of NAT networks in a lab.
	HostUplink = "eth0"
)

// Names of the lab's own links: in the router, and the internet host's NIC.
const (
	lanBridge = "lan0" // the LAN itself
	routerMAC = "02:00:ac:1e:00:01"
	lanToInet = "inet0" // veth to the internet host's eth0
	lanToHost = "host0" // veth to the KVM host's eth0, a port of lan0
	inetNIC   = "eth0"
)

// prefixBits is the length of both lab subnets, LANSubnet and InetSubnet.
const prefixBits = "/24"

// Where the lab keeps what it must find again.
const (
	// StateRoot holds one directory per lab, named after its prefix.
	StateRoot = "/run/kvmnet/lab"
	// netnsDir is where `ip netns add` keeps its handles.
	netnsDir = "/run/netns"
	// etcNetns holds per-namespace files that `ip netns exec` (and kvmnet's
	// --netns) bind over /etc, such as resolv.conf.
	etcNetns = "/etc/netns"
	// kvmnet's own per-namespace state and socket (see DESIGN.md, --netns);
	// down removes those of the lab's namespaces, which no longer exist.
	kvmnetStateNetns = "/var/lib/kvmnet/netns"
	kvmnetRunDir     = "/run/kvmnet"
)

// ValidatePrefix checks a lab prefix: letters, digits and '-', starting with
// a letter or digit, at most 10 characters.
func ValidatePrefix(prefix string) error {
	if prefix == "" || len(prefix) > maxPrefixLen {
		return fmt.Errorf("lab prefix %q: want 1 to %d characters", prefix, maxPrefixLen)
	}
	for i, r := range prefix {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' && i > 0 && i < len(prefix)-1:
		default:
			return fmt.Errorf("lab prefix %q: want letters, digits and '-' (not first or last), e.g. %q", prefix, DefaultPrefix)
		}
	}
	return nil
}

// nsName is the namespace of a node of lab prefix.
func nsName(prefix, node string) string {
	switch node {
	case NodeLAN, NodeInet, NodeHost:
		return prefix + "-" + node
	}
	return prefix + "-vm-" + node
}

// labDir is the state directory of lab prefix.
func labDir(prefix string) string { return filepath.Join(StateRoot, prefix) }

// guestIface is the name of a VM's interface number i inside its namespace.
func guestIface(i int) string { return fmt.Sprintf("eth%d", i) }

// belongsTo reports whether name (of a namespace or a file named after one)
// is lab prefix's: it starts with "PREFIX-" and is not a name of another lab
// whose prefix starts with "PREFIX-" (Up refuses such overlaps; this guards
// down against labs made otherwise).
func belongsTo(prefix, name string, otherLabs []string) bool {
	if !strings.HasPrefix(name, prefix+"-") {
		return false
	}
	for _, other := range otherLabs {
		if other != prefix && strings.HasPrefix(other, prefix+"-") && strings.HasPrefix(name, other+"-") {
			return false
		}
	}
	return true
}

// labsOnDisk lists the prefixes that have a state directory.
func labsOnDisk() []string {
	entries, err := os.ReadDir(StateRoot)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// namespaces lists the named network namespaces (what `ip netns list` shows).
func namespaces() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing network namespaces in %s: %w", netnsDir, err)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, nil
}

// validIfname reports whether name can be a Linux interface name.
func validIfname(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsAny(name, "/: \t\n")
}

// validVMName reports whether a VM name can be part of a namespace name
// (a file under /run/netns) and of a shell script without quoting surprises.
func validVMName(name string) bool {
	if name == "" || len(name) > 64 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

// checkConfig refuses configs the lab cannot build. It checks only what the
// lab needs; model.Parse has validated the rest.
func checkConfig(cfg *model.Config) error {
	if cfg == nil {
		return nil
	}
	seenVM := map[string]bool{}
	// The host's own NIC and loopback live in the host namespace too.
	seenTap := map[string]string{HostUplink: "the host's LAN NIC", "lo": "loopback"}
	for _, vm := range cfg.VMs {
		switch {
		case !validVMName(vm.Name):
			return fmt.Errorf("VM %q: lab needs a name of letters, digits, '-', '_' and '.' (at most 64) for its namespace", vm.Name)
		case vm.Name == NodeLAN || vm.Name == NodeInet || vm.Name == NodeHost:
			return fmt.Errorf("VM %q: the name is taken by a lab node (lan, inet, host); rename the VM to try it in the lab", vm.Name)
		case seenVM[vm.Name]:
			return fmt.Errorf("VM %q: defined twice", vm.Name)
		}
		seenVM[vm.Name] = true
		for i, ifc := range vm.Interfaces {
			if ifc.CreateTap {
				continue
			}
			if !validIfname(ifc.Tap) {
				return fmt.Errorf("VM %q interface %d: tap name %q: want 1 to 15 characters without '/', ':' or spaces (model.Parse fills a default; set Tap when building a Config by hand)", vm.Name, i, ifc.Tap)
			}
			if other, dup := seenTap[ifc.Tap]; dup {
				return fmt.Errorf("VM %q interface %d: tap name %q is already used by %s in the host namespace", vm.Name, i, ifc.Tap, other)
			}
			seenTap[ifc.Tap] = fmt.Sprintf("VM %q", vm.Name)
			if hw, err := net.ParseMAC(ifc.HWAddr); err != nil || len(hw) != 6 {
				return fmt.Errorf("VM %q interface %d: MAC %q: want six bytes like 52:54:00:00:00:10 (model.Parse fills HWAddr; set it when building a Config by hand)", vm.Name, i, ifc.HWAddr)
			}
		}
	}
	return nil
}
