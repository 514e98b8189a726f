// Package sockets lists the host's listening sockets and the processes
// that own them, from /proc, as `ss -ltnup` shows them.
package sockets

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// TCP state LISTEN and UDP "unconnected" in /proc/net/{tcp,udp}.
const (
	stateListen = "0A"
	stateClose  = "07"
)

// List returns the listening TCP sockets and bound, unconnected UDP
// sockets of the calling thread's network namespace whose protocol and
// port keep accepts (nil keeps all). Only the kept sockets' owners are
// looked for, which reads every process's file descriptors.
func List(keep func(proto string, port uint16) bool) ([]plan.Listener, error) {
	out, inodes, err := diagList(keep)
	if err != nil {
		// A kernel without inet_diag: read /proc, as ss falls back to.
		out, inodes, err = procList(keep)
	}
	if err != nil {
		return nil, err
	}
	if len(out) > 0 {
		owners(inodes, out)
	}
	return out, nil
}

// procList lists what List lists from /proc/net.
func procList(keep func(proto string, port uint16) bool) ([]plan.Listener, map[string][]int, error) {
	var out []plan.Listener
	inodes := map[string][]int{}
	for _, f := range []struct{ file, proto, state string }{
		{"tcp", "tcp", stateListen}, {"tcp6", "tcp", stateListen},
		{"udp", "udp", stateClose}, {"udp6", "udp", stateClose},
	} {
		// thread-self: /proc/self/net would show the namespace of the
		// process's main thread, not of this one.
		path := filepath.Join("/proc/thread-self/net", f.file)
		file, err := os.Open(path)
		if os.IsNotExist(err) {
			continue // no IPv6, say
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", path, err)
		}
		sc := bufio.NewScanner(file)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != f.state {
				continue
			}
			ap, err := parseHexAddrPort(fields[1])
			if err != nil {
				file.Close()
				return nil, nil, fmt.Errorf("parsing %s: %w", path, err)
			}
			if keep != nil && !keep(f.proto, ap.Port()) {
				continue
			}
			inodes[fields[9]] = append(inodes[fields[9]], len(out))
			out = append(out, plan.Listener{Proto: f.proto, Addr: ap.Addr().Unmap(), Port: ap.Port()})
		}
		file.Close()
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return out, inodes, nil
}

// owners fills Process from /proc/PID/fd links to socket:[INODE]. Processes
// that vanish or cannot be read are skipped: the name is for messages only.
func owners(inodes map[string][]int, out []plan.Listener) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			idx, ok := inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")]
			if !ok {
				continue
			}
			comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
			for _, i := range idx {
				out[i].Process = fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid)
			}
		}
	}
}

// parseHexAddrPort parses "0100007F:1F90" (IPv4, host byte order per 32-bit
// word) or the 32-hex-digit IPv6 form.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	// Each 32-bit word is in host (little-endian) order.
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
