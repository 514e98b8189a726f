package sockets

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// Reading /proc/net/tcp walks every TCP socket of the machine (the hash of
// established connections is shared by all namespaces): 5 ms on an idle
// host, more on a busy one. sock_diag asks the kernel for the listening
// sockets alone, which only walks the listening hash.

// Sizes of struct inet_diag_req_v2 and struct inet_diag_msg
// (linux/inet_diag.h).
const (
	sizeofDiagReq = 56
	sizeofDiagMsg = 72
)

// diagList lists, over NETLINK_SOCK_DIAG, the listening TCP and bound,
// unconnected UDP sockets of the calling thread's namespace, with the
// inode of each (as /proc/net/tcp gives it), for owners.
func diagList(keep func(proto string, port uint16) bool) ([]plan.Listener, map[string][]int, error) {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("opening sock_diag netlink socket: %w", err)
	}
	defer c.Close()
	var out []plan.Listener
	inodes := map[string][]int{}
	for _, q := range []struct {
		proto  string
		num    uint8
		family uint8
		state  uint8
	}{
		{"tcp", unix.IPPROTO_TCP, unix.AF_INET, unix.BPF_TCP_LISTEN},
		{"tcp", unix.IPPROTO_TCP, unix.AF_INET6, unix.BPF_TCP_LISTEN},
		// An unconnected UDP socket is in state TCP_CLOSE.
		{"udp", unix.IPPROTO_UDP, unix.AF_INET, unix.BPF_TCP_CLOSE},
		{"udp", unix.IPPROTO_UDP, unix.AF_INET6, unix.BPF_TCP_CLOSE},
	} {
		req := make([]byte, sizeofDiagReq)
		req[0], req[1] = q.family, q.num
		binary.NativeEndian.PutUint32(req[4:], 1<<q.state)
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
			Data:   req,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s sockets over sock_diag: %w", q.proto, err)
		}
		for _, m := range msgs {
			d := m.Data
			if len(d) < sizeofDiagMsg {
				continue
			}
			port := binary.BigEndian.Uint16(d[4:6])
			// A UDP socket in state close and port 0 is not bound; one
			// connected to a peer does not receive forwarded packets.
			if port == 0 || (q.proto == "udp" && binary.BigEndian.Uint16(d[6:8]) != 0) {
				continue
			}
			if keep != nil && !keep(q.proto, port) {
				continue
			}
			var addr netip.Addr
			if d[0] == unix.AF_INET {
				addr = netip.AddrFrom4([4]byte(d[8:12]))
			} else {
				addr = netip.AddrFrom16([16]byte(d[8:24])).Unmap()
			}
			inode := strconv.FormatUint(uint64(binary.NativeEndian.Uint32(d[68:72])), 10)
			inodes[inode] = append(inodes[inode], len(out))
			out = append(out, plan.Listener{Proto: q.proto, Addr: addr, Port: port})
		}
	}
	return out, inodes, nil
}
