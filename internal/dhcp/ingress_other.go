//go:build !linux

package dhcp

import (
	"errors"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// listener is Linux-only: it reads requests with a packet socket.
type listener struct{}

func listen(string) (*listener, error) {
	return nil, errors.New("the dhcp server needs linux packet sockets")
}

func (*listener) Close() error { return nil }

func (*listener) serve(func(net.PacketConn, Ingress, *dhcpv4.DHCPv4)) error { return nil }
