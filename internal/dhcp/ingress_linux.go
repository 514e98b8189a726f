//go:build linux

package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/kernel/link"
	"github.com/kvmnet/kvmnet/internal/kernel/snoop"
)

// Why a packet socket. A UDP socket on the bridge tells neither the port a
// request came in through nor its Ethernet source (IP_PKTINFO names the
// bridge). The bridge's FDB maps a source MAC to a port, but only for
// whoever sent that MAC last: a guest without spoofguard moves it at
// will. An nftables rule can compare chaddr with constants and sets, not
// with the frame's own source, and cannot see guests kvmnet does not
// know. A packet socket for every protocol (ETH_P_ALL) sees each frame on
// the port it enters through, before the bridge: sll_ifindex is the tap
// and the frame carries its source MAC. It sees it before port security
// too, so the server checks what port security would (admit), and reads
// requests from there alone: the UDP socket on port 67, kept to send
// replies and to own the port, gets a filter that drops everything.

// requestFilter accepts untagged Ethernet frames carrying unfragmented
// IPv4 UDP to port 67 (tcpdump 'not vlan and ip and udp dst port 67').
var requestFilter = []bpf.Instruction{
	bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 10},
	bpf.LoadAbsolute{Off: 12, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: 8},
	bpf.LoadAbsolute{Off: 23, Size: 1},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: 20, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},
	bpf.LoadMemShift{Off: 14},
	bpf.LoadIndirect{Off: 16, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcpv4.ServerPort, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

// dropAll is the UDP socket's filter: it queues nothing.
var dropAll = []bpf.Instruction{bpf.RetConstant{Val: 0}}

// maxInflight bounds the requests handled at once. A guest flooding the
// server would otherwise grow a goroutine per frame; past the bound frames
// are dropped, and clients ask again (every DHCP client retries).
const maxInflight = 256

// packetBuffer is the receive buffer of the packet socket the requests
// are read from.
const packetBuffer = 4 << 20

// portCacheTTL bounds how long the listener trusts what it learned about
// an interface index: a tap can be moved to another bridge.
const portCacheTTL = 5 * time.Second

// listener reads the network's client messages off its bridge's ports and
// sends replies.
type listener struct {
	conn   *net.UDPConn // replies; reads nothing
	pkt    *os.File     // the packet socket, non-blocking
	raw    syscall.RawConn
	links  *link.Handle
	bridge int // the bridge's interface index
	// closed is set by Close before it closes the sockets, so serve
	// tells a close from a failure whatever error the read returns.
	closed atomic.Bool

	// ports caches interface index -> port name ("" when the interface
	// is not a port of the bridge); the serve loop alone uses it.
	ports map[int]portEntry
}

type portEntry struct {
	name string
	at   time.Time
}

// listen opens the sockets of a server on bridge iface, in the network
// namespace of the calling thread.
func listen(iface string) (l *listener, err error) {
	br, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("looking up bridge: %w", err)
	}
	l = &listener{bridge: br.Index, ports: map[int]portEntry{}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	// The handle keeps its socket in this namespace, whatever thread
	// later uses it.
	if l.links, err = link.New(netns.None()); err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	if l.conn, err = server4.NewIPv4UDPConn(iface, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}); err != nil {
		return nil, err
	}
	rc, err := l.conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("getting the udp socket's descriptor: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = snoop.AttachFilter(int(fd), dropAll) }); err != nil {
		return nil, fmt.Errorf("getting the udp socket's descriptor: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("filtering the udp socket: %w", serr)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, snoop.AllProtocols)
	if err != nil {
		return nil, fmt.Errorf("opening a packet socket (needs CAP_NET_RAW): %w", err)
	}
	// Replies the host sends, and requests the bridge floods out of
	// other ports, are outgoing frames: not requests entering a port.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ignoring outgoing frames on the packet socket: %w", err)
	}
	// A burst of requests that comes while the server waits for a CPU
	// must queue in the kernel, not be dropped: the default buffer
	// (net.core.rmem_default, about 200 KB) holds a few hundred frames,
	// some 40 ms at 5,000 new clients a second. Without CAP_NET_ADMIN the
	// size is capped at net.core.rmem_max, which is still no worse.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, packetBuffer); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, packetBuffer)
	}
	if err := snoop.AttachFilter(fd, requestFilter); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("filtering the packet socket: %w", err)
	}
	l.pkt = os.NewFile(uintptr(fd), "dhcp-packet")
	if l.raw, err = l.pkt.SyscallConn(); err != nil {
		return nil, fmt.Errorf("getting the packet socket's descriptor: %w", err)
	}
	return l, nil
}

// Close closes the sockets; serve then returns.
func (l *listener) Close() error {
	l.closed.Store(true)
	var errs []error
	if l.pkt != nil {
		errs = append(errs, l.pkt.Close())
	}
	if l.conn != nil {
		errs = append(errs, l.conn.Close())
	}
	if l.links != nil {
		l.links.Close()
	}
	return errors.Join(errs...)
}

// serve reads requests until the listener is closed and runs handle for
// each on its own goroutine. It returns nil after Close.
func (l *listener) serve(handle func(net.PacketConn, Ingress, *dhcpv4.DHCPv4)) error {
	buf := make([]byte, 65536)
	slots := make(chan struct{}, maxInflight)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := l.raw.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if l.closed.Load() {
			return nil
		}
		if err == nil {
			err = rerr
		}
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENETDOWN) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the packet socket: %w", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING || ll.Ifindex == l.bridge {
			continue
		}
		port := l.port(ll.Ifindex)
		if port == "" {
			continue
		}
		in, m, ok := parseRequest(buf[:n])
		if !ok {
			continue
		}
		in.Port = port
		select {
		case slots <- struct{}{}:
			go func() {
				defer func() { <-slots }()
				handle(l.conn, in, m)
			}()
		default:
		}
	}
}

// port returns the name of interface index i when it is a port of the
// bridge, "" otherwise.
func (l *listener) port(i int) string {
	now := time.Now()
	if e, ok := l.ports[i]; ok && now.Sub(e.at) < portCacheTTL {
		return e.name
	}
	e := portEntry{at: now}
	if name, master, err := l.links.ByIndex(i); err == nil && master == l.bridge {
		e.name = name
	}
	if len(l.ports) > 4096 {
		// Frames of every interface of the namespace come by; keep
		// the cache from growing with interfaces long gone.
		clear(l.ports)
	}
	l.ports[i] = e
	return e.name
}

// parseRequest reads the client message out of an Ethernet frame that
// passed requestFilter.
func parseRequest(frame []byte) (Ingress, *dhcpv4.DHCPv4, bool) {
	if len(frame) < 14+20 {
		return Ingress{}, nil, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < 20 || total < ihl+8 || total > len(ip) {
		return Ingress{}, nil, false
	}
	udp := ip[ihl:total]
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return Ingress{}, nil, false
	}
	m, err := dhcpv4.FromBytes(udp[8:ulen])
	if err != nil {
		return Ingress{}, nil, false
	}
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	in := Ingress{MAC: net.HardwareAddr(append([]byte(nil), frame[6:12]...)), IP: src, Dst: dst}
	return in, m, true
}
