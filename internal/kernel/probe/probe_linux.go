// Package probe checks that the host still reaches its default gateway:
// the test `kvmnet apply --confirm` runs right after an apply that may have
// cut the host off. A gateway counts as reached when it answers an ICMP
// echo or, since many routers drop pings, its ARP (or neighbour discovery)
// entry resolves: the kernel resolves it to send the echo.
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

// Gateway probes gw for up to timeout: ICMP echo requests, one every
// 200 ms, until a reply comes or the neighbour entry of gw is resolved. It
// returns what answered, or an error that says what failed.
func Gateway(ctx context.Context, gw netip.Addr, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	route, err := netlink.RouteGet(gw.AsSlice())
	if err != nil || len(route) == 0 {
		return "", fmt.Errorf("gateway %s: no route to it (%v)", gw, err)
	}
	dev := route[0].LinkIndex
	devName := fmt.Sprint(dev)
	if l, err := netlink.LinkByIndex(dev); err == nil {
		devName = l.Attrs().Name
	}
	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return "", fmt.Errorf("gateway %s: opening an ICMP socket: %w", gw, err)
	}
	defer conn.Close()
	id := uint16(os.Getpid())
	replies := make(chan struct{}, 1)
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
				select {
				case replies <- struct{}{}:
				default:
				}
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		if _, err := conn.WriteTo(echo(id, seq), &net.IPAddr{IP: gw.AsSlice()}); err != nil && !errors.Is(err, unix.EHOSTUNREACH) {
			return "", fmt.Errorf("gateway %s: sending an ICMP echo on %s: %w", gw, devName, err)
		}
		select {
		case <-replies:
			return fmt.Sprintf("gateway %s answered an ICMP echo on %s after %s", gw, devName, time.Since(start).Round(time.Millisecond)), nil
		case <-ctx.Done():
			return "", fmt.Errorf("gateway %s: no ICMP echo reply and no ARP answer on %s within %s", gw, devName, timeout)
		case <-tick.C:
		}
		if resolved(dev, gw) {
			return fmt.Sprintf("gateway %s answered ARP on %s after %s", gw, devName, time.Since(start).Round(time.Millisecond)), nil
		}
	}
}

// resolved reports whether the neighbour entry of gw on link dev holds a
// confirmed link-layer address.
func resolved(dev int, gw netip.Addr) bool {
	neighs, err := netlink.NeighList(dev, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, n := range neighs {
		if n.IP.Equal(gw.AsSlice()) && n.State&netlink.NUD_REACHABLE != 0 && len(n.HardwareAddr) > 0 {
			return true
		}
	}
	return false
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
