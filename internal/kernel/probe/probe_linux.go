// Package probe checks that the host still reaches its default gateway:
// the test `kvmnet apply --confirm` runs right after an apply that may have
// cut the host off. A gateway counts as reached when it answers, after the
// probe started, an ICMP echo or, since many routers drop pings, an ARP
// request the probe sends itself. The kernel's neighbour cache is not
// asked: an entry learnt before the apply stays REACHABLE for up to
// base_reachable_time (30 s by default, more on some hosts) after the
// gateway stopped answering, long enough to hide a lock-out.
package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Gateway probes gw for up to timeout: every 200 ms an ICMP echo request
// and an ARP request for gw, until gw answers either. It returns what
// answered, or an error that says what failed.
func Gateway(ctx context.Context, gw netip.Addr, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	route, err := netlink.RouteGet(gw.AsSlice())
	if err != nil || len(route) == 0 {
		return "", fmt.Errorf("gateway %s: no route to it (%v)", gw, err)
	}
	dev := route[0].LinkIndex
	l, err := netlink.LinkByIndex(dev)
	if err != nil {
		return "", fmt.Errorf("gateway %s: reading link %d of its route: %w", gw, dev, err)
	}
	devName := l.Attrs().Name
	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return "", fmt.Errorf("gateway %s: opening an ICMP socket: %w", gw, err)
	}
	defer conn.Close()
	arp, err := newARPer(l, route[0].Src, gw)
	if err != nil {
		return "", fmt.Errorf("gateway %s: %w", gw, err)
	}
	id := uint16(os.Getpid())
	replies := make(chan string, 2)
	answered := func(what string) {
		select {
		case replies <- what:
		default:
		}
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			// An echo reply (type 0) of ours from the gateway; raw
			// sockets deliver the IPv4 payload without its header.
			if ip, ok := from.(*net.IPAddr); ok && ip.IP.Equal(gw.AsSlice()) && n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id {
				answered("an ICMP echo")
			}
		}
	}()
	arpDone := make(chan struct{})
	go func() {
		defer close(arpDone)
		if arp.wait(ctx) {
			answered("ARP")
		}
	}()
	// The reader ends before its socket is closed, so it never reads a
	// descriptor number the process has handed to something else.
	defer func() { cancel(); <-arpDone; arp.close() }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		if _, err := conn.WriteTo(echo(id, seq), &net.IPAddr{IP: gw.AsSlice()}); err != nil && !errors.Is(err, unix.EHOSTUNREACH) {
			return "", fmt.Errorf("gateway %s: sending an ICMP echo on %s: %w", gw, devName, err)
		}
		if err := arp.request(); err != nil {
			return "", fmt.Errorf("gateway %s: sending an ARP request on %s: %w", gw, devName, err)
		}
		select {
		case what := <-replies:
			return fmt.Sprintf("gateway %s answered %s on %s after %s", gw, what, devName, time.Since(start).Round(time.Millisecond)), nil
		case <-ctx.Done():
			return "", fmt.Errorf("gateway %s: no ICMP echo reply and no ARP answer on %s within %s", gw, devName, timeout)
		case <-tick.C:
		}
	}
}

// arper asks for one IPv4 address with ARP on one link, over a packet
// socket of its own, and sees the answers: a reply proves the gateway is
// there now, whatever the kernel's neighbour cache holds.
// A nil *arper (a link without Ethernet addresses, such as a tunnel)
// sends nothing and waits for nothing: the ICMP echo is the only probe.
type arper struct {
	fd   int
	link int
	req  []byte
	gw   [4]byte
}

// ARP constants (RFC 826) for Ethernet and IPv4.
const (
	arpHdrEther = 1
	arpRequest  = 1
	arpReply    = 2
	arpLen      = 28
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// newARPer opens a packet socket for ARP bound to link l. The request
// names src as its sender address when the route has one, else 0.0.0.0
// (an ARP probe, RFC 5227, which gateways answer too).
func newARPer(l netlink.Link, src net.IP, gw netip.Addr) (*arper, error) {
	mac := l.Attrs().HardwareAddr
	if len(mac) != 6 || l.Attrs().RawFlags&unix.IFF_NOARP != 0 {
		return nil, nil
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return nil, fmt.Errorf("opening an ARP socket: %w", err)
	}
	a := &arper{fd: fd, link: l.Attrs().Index, gw: gw.As4()}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: a.link}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding an ARP socket to %q: %w", l.Attrs().Name, err)
	}
	// Reads wake up at least every 100 ms to see whether the probe ended.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting the ARP socket's timeout: %w", err)
	}
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:], arpHdrEther)
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], arpRequest)
	copy(b[8:14], mac)
	if s4 := src.To4(); s4 != nil {
		copy(b[14:18], s4)
	}
	// Target hardware address (18:24) stays zero: it is what is asked.
	copy(b[24:28], a.gw[:])
	a.req = b
	return a, nil
}

// request broadcasts one ARP request for the gateway.
func (a *arper) request() error {
	if a == nil {
		return nil
	}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: a.link, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return unix.Sendto(a.fd, a.req, 0, to)
}

// wait reads ARP frames until a reply from the gateway's address comes
// (true) or ctx ends (false). Only frames received after the socket was
// opened are seen, so an answer is an answer to this probe's time.
func (a *arper) wait(ctx context.Context) bool {
	if a == nil {
		return false
	}
	buf := make([]byte, 128)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(a.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return false
		}
		if isReplyFrom(buf[:n], a.gw) {
			return true
		}
	}
	return false
}

// isReplyFrom reports whether frame is an Ethernet/IPv4 ARP reply whose
// sender is gw.
func isReplyFrom(frame []byte, gw [4]byte) bool {
	return len(frame) >= arpLen &&
		binary.BigEndian.Uint16(frame[0:]) == arpHdrEther &&
		binary.BigEndian.Uint16(frame[2:]) == unix.ETH_P_IP &&
		binary.BigEndian.Uint16(frame[6:]) == arpReply &&
		[4]byte(frame[14:18]) == gw
}

func (a *arper) close() {
	if a != nil {
		unix.Close(a.fd)
	}
}

// echo builds an ICMP echo request.
func echo(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "kvmnet\x00\x00")
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}
