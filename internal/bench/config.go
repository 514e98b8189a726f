package bench

import (
	"fmt"
	"strings"

	"github.com/kvmnet/kvmnet/internal/lab"
)

// benchConfig is the host file the network bench applies with kvmnet.
type benchConfig struct {
	// Ports is the number of extra interfaces, each with a tap kvmnet
	// creates, on the NAT network: they show whether the cost of a path
	// grows with the number of configured (and protected) ports.
	Ports int
	// Forwards adds port forwards from the host's LAN address to the
	// NAT guest's iperf3 and echo ports (TCP and UDP).
	Forwards bool
	// Bridged adds a bridged network on the host's uplink with a guest.
	Bridged bool
}

// YAML renders the host file.
func (c benchConfig) YAML() string {
	var b strings.Builder
	b.WriteString("# kvmnet bench: the host file of the bench's lab\nnetworks:\n")
	fmt.Fprintf(&b, "  - name: %s\n    mode: nat\n    subnet: %s\n    egress: %s\n", natNetwork, natSubnet, lab.HostUplink)
	if c.Forwards {
		fmt.Fprintf(&b, "    forwards:\n")
		fmt.Fprintf(&b, "      - {proto: tcp, port: %d, to: %s}\n", iperfPort, guestNAT)
		fmt.Fprintf(&b, "      - {proto: udp, port: %d, to: %s}\n", iperfPort, guestNAT)
		fmt.Fprintf(&b, "      - {proto: udp, port: %d, to: %s}\n", echoPort, guestNAT)
		fmt.Fprintf(&b, "      - {proto: tcp, port: %d, to: %s}\n", echoPort, guestNAT)
	}
	if c.Bridged {
		fmt.Fprintf(&b, "  - name: %s\n    mode: bridged\n    bridge: %s\n    uplink: %s\n", bridgedNetwork, bridgedBridge, lab.HostUplink)
	}
	b.WriteString("vms:\n")
	fmt.Fprintf(&b, "  - name: %s\n    interfaces:\n      - {network: %s, mac: \"52:54:00:be:00:01\", ip: %s, tap: %s-0, security: {spoofguard: true}}\n",
		guestNAT, natNetwork, natGuest, guestNAT)
	if c.Bridged {
		fmt.Fprintf(&b, "  - name: %s\n    interfaces:\n      - {network: %s, mac: \"52:54:00:be:00:02\", tap: %s-0, security: {spoofguard: true}}\n",
			guestBridged, bridgedNetwork, guestBridged)
	}
	for i := range c.Ports {
		fmt.Fprintf(&b, "  - name: x%d\n    interfaces: [{network: %s, mac: \"52:54:00:ee:%02x:%02x\", tap: bx%d, createTap: true}]\n",
			i, natNetwork, i>>8&0xff, i&0xff, i)
	}
	return b.String()
}
