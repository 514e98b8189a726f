// Package snoop watches the DHCPv4 replies that leave through given ports
// (DHCP snooping): on a bridged network the LAN's server, not kvmnet,
// hands guests their addresses, and port security binds each guest to the
// address the server offered or acknowledged to its MAC.
//
// One packet socket (AF_PACKET, ETH_P_ALL) with a classic BPF filter takes
// UDP from port 67 to port 68 off every interface of the namespace; frames
// a bridge sends out of a port show there as PACKET_OUTGOING on that port.
// A protocol-specific (ETH_P_IP) socket would see none of them: the kernel
// hands outgoing frames to ETH_P_ALL sockets only.
package snoop

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Reply is a DHCP reply seen leaving through a port.
type Reply struct {
	// Port is the interface the frame left through.
	Port string
	// MAC is the client the reply is for (chaddr).
	MAC string
	// Type is OFFER, ACK or NAK.
	Type dhcpv4.MessageType
	// IP is the address offered or acknowledged (yiaddr).
	IP netip.Addr
	// Lease is the lease time (option 51); zero when absent.
	Lease time.Duration
	// Server is the server identifier (option 54).
	Server netip.Addr
}

// filter accepts Ethernet frames carrying unfragmented IPv4 UDP from
// port 67 to port 68 (tcpdump 'ip and udp src port 67 and dst port 68').
var filter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: 8},
	bpf.LoadAbsolute{Off: 23, Size: 1},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: 20, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},
	bpf.LoadMemShift{Off: 14},
	bpf.LoadIndirect{Off: 14, Size: 4},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 67<<16 | 68, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

// Watch reports DHCP replies that leave through an outgoing port for
// which want returns true, until ctx ends. It returns an error only when
// the socket cannot be opened; it needs CAP_NET_RAW.
func Watch(ctx context.Context, want func(port string) bool, out chan<- Reply) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, AllProtocols)
	if err != nil {
		return fmt.Errorf("dhcp snooping: opening a packet socket: %w", err)
	}
	if err := AttachFilter(fd, filter); err != nil {
		unix.Close(fd)
		return fmt.Errorf("dhcp snooping: attaching the filter: %w", err)
	}
	// A read wakes up every second to notice ctx.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return fmt.Errorf("dhcp snooping: %w", err)
	}
	go func() {
		defer unix.Close(fd)
		names := map[int]string{}
		buf := make([]byte, 65536)
		for ctx.Err() == nil {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype != unix.PACKET_OUTGOING {
				continue
			}
			name, ok := names[ll.Ifindex]
			if !ok {
				ifc, err := net.InterfaceByIndex(ll.Ifindex)
				if err != nil {
					continue
				}
				name = ifc.Name
				names[ll.Ifindex] = name
			}
			if !want(name) {
				// Names of indexes change as links come and go: look
				// again next time.
				delete(names, ll.Ifindex)
				continue
			}
			r, ok := parse(buf[:n])
			if !ok {
				continue
			}
			r.Port = name
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

// parse reads a DHCP reply out of an Ethernet frame that passed filter.
func parse(frame []byte) (Reply, bool) {
	if len(frame) < 14+20 {
		return Reply{}, false
	}
	ihl := int(frame[14]&0x0f) * 4
	udp := 14 + ihl
	if len(frame) < udp+8 {
		return Reply{}, false
	}
	msg, err := dhcpv4.FromBytes(frame[udp+8:])
	if err != nil || msg.OpCode != dhcpv4.OpcodeBootReply {
		return Reply{}, false
	}
	r := Reply{MAC: msg.ClientHWAddr.String(), Type: msg.MessageType(), Lease: msg.IPAddressLeaseTime(0)}
	r.IP, _ = netip.AddrFromSlice(msg.YourIPAddr.To4())
	r.Server, _ = netip.AddrFromSlice(msg.ServerIdentifier().To4())
	switch r.Type {
	case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak:
		return r, true
	}
	return Reply{}, false
}

// AllProtocols is the protocol of a packet socket that sees every frame
// (ETH_P_ALL, in network byte order as socket(2) wants it).
var AllProtocols = int(htons(unix.ETH_P_ALL))

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// AttachFilter assembles prog and attaches it to socket fd as its classic
// BPF filter (SO_ATTACH_FILTER): the kernel then queues only the frames
// prog accepts.
func AttachFilter(fd int, prog []bpf.Instruction) error {
	asm, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("assembling the filter: %w", err)
	}
	raw := make([]unix.SockFilter, len(asm))
	for i, p := range asm {
		raw[i] = unix.SockFilter{Code: p.Op, Jt: p.Jt, Jf: p.Jf, K: p.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(raw)), Filter: &raw[0]}); err != nil {
		return fmt.Errorf("attaching the filter: %w", err)
	}
	return nil
}
