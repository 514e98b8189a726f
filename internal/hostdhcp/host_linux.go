package hostdhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/kernel/link"
)

// kernelHost is the real host: rtnetlink (through internal/kernel/link,
// where the project keeps its netlink use) and UDP sockets in the calling
// process's network namespace. Each call opens its own handle: the client
// asks a few times a lease, and holds nothing between.
type kernelHost struct{}

func newHost() host { return kernelHost{} }

// withLink runs f with a link handle in the calling thread's namespace.
func withLink(f func(h *link.Handle) error) error {
	h, err := link.New(netns.None())
	if err != nil {
		return err
	}
	defer h.Close()
	return f(h)
}

func (kernelHost) link(name string) (mac net.HardwareAddr, ready bool, err error) {
	err = withLink(func(h *link.Handle) error {
		mac, ready, err = h.State(name)
		return err
	})
	if link.IsNotFound(err) || errors.Is(err, unix.ENODEV) {
		return nil, false, fmt.Errorf("looking up %q: %w", name, errNoLink)
	}
	return mac, ready, err
}

// listen opens a UDP socket on 0.0.0.0:68 bound to the interface (as
// SO_BINDTODEVICE), allowed to broadcast. SO_REUSEADDR lets it share port
// 68 with DHCP clients on other interfaces that set it too (dhclient and
// udhcpc do).
func (kernelHost) listen(name string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("setting SO_REUSEADDR: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("setting SO_BROADCAST: %w", serr)
				return
			}
			if serr = unix.BindToDevice(s, name); serr != nil {
				serr = fmt.Errorf("binding to device: %w", serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(clientPort))
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("opening the DHCP client socket %s on %q: %w", addr, name, err)
	}
	return pc, nil
}

func (kernelHost) replaceAddr(name string, p netip.Prefix, brd netip.Addr, lifetime time.Duration) error {
	return withLink(func(h *link.Handle) error { return h.ReplaceAddr(name, p, brd, lifetime) })
}

func (kernelHost) delAddr(name string, p netip.Prefix) error {
	return withLink(func(h *link.Handle) error { return h.DelAddrIfPresent(name, p) })
}

func (kernelHost) defaultGateway(name string) (gw netip.Addr, err error) {
	err = withLink(func(h *link.Handle) error {
		gw, err = h.DefaultGatewayVia(name)
		return err
	})
	return gw, err
}
