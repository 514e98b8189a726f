//go:build !linux

package hostdhcp

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// otherHost stands in on systems other than Linux, where kvmnet does not
// run: every call fails, so Run logs and waits.
type otherHost struct{}

func newHost() host { return otherHost{} }

var errNotLinux = errors.New("the host DHCP client needs Linux")

func (otherHost) link(string) (net.HardwareAddr, bool, error) { return nil, false, errNotLinux }
func (otherHost) listen(string) (net.PacketConn, error) {
	return nil, errNotLinux
}
func (otherHost) replaceAddr(string, netip.Prefix, netip.Addr, time.Duration) error {
	return errNotLinux
}
func (otherHost) delAddr(string, netip.Prefix) error        { return errNotLinux }
func (otherHost) defaultGateway(string) (netip.Addr, error) { return netip.Addr{}, errNotLinux }
