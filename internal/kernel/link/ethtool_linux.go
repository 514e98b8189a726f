package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The driver statistics `ethtool -S` shows are only reachable through the
// SIOCETHTOOL ioctl: ethtool's netlink family carries the standard groups
// (eth-mac, eth-phy, rmon), not the driver's own named counters, where a
// NIC reports rx_missed_errors or rx_crc_errors.
const (
	ethSSStats     = 1  // ETH_SS_STATS
	ethGStringLen  = 32 // ETH_GSTRING_LEN
	maxEthtoolStat = 4096
)

// ifreqData is struct ifreq with ifr_data: the interface name and a
// pointer to the ethtool command.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // the rest of the ifreq union
}

// EthtoolStats returns the driver statistics of link name, as `ethtool -S
// NAME` prints them; an empty map for a driver that has none (tun) and an
// error only when the kernel refuses for another reason.
func EthtoolStats(name string) (map[string]uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ethtool -S %s: %w", name, err)
	}
	defer unix.Close(fd)
	ioctl := func(buf []byte) error {
		var ifr ifreqData
		copy(ifr.name[:unix.IFNAMSIZ-1], name)
		ifr.data = unsafe.Pointer(&buf[0])
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(buf)
		if errno != 0 {
			return errno
		}
		return nil
	}
	// struct ethtool_sset_info: cmd, reserved, sset_mask, then one u32 per
	// set asked for.
	info := make([]byte, 20)
	binary.NativeEndian.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	binary.NativeEndian.PutUint64(info[8:], 1<<ethSSStats)
	if err := ioctl(info); errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		return map[string]uint64{}, nil
	} else if err != nil {
		return nil, fmt.Errorf("ethtool -S %s: %w", name, err)
	}
	if binary.NativeEndian.Uint64(info[8:]) == 0 {
		return map[string]uint64{}, nil // the driver has no such set
	}
	n := int(binary.NativeEndian.Uint32(info[16:]))
	if n == 0 {
		return map[string]uint64{}, nil
	}
	if n > maxEthtoolStat {
		return nil, fmt.Errorf("ethtool -S %s: the driver reports %d counters, more than %d", name, n, maxEthtoolStat)
	}
	// struct ethtool_gstrings: cmd, string_set, len, then len names.
	names := make([]byte, 12+n*ethGStringLen)
	binary.NativeEndian.PutUint32(names[0:], unix.ETHTOOL_GSTRINGS)
	binary.NativeEndian.PutUint32(names[4:], ethSSStats)
	binary.NativeEndian.PutUint32(names[8:], uint32(n))
	if err := ioctl(names); err != nil {
		return nil, fmt.Errorf("ethtool -S %s: names: %w", name, err)
	}
	// struct ethtool_stats: cmd, n_stats, then n u64 values.
	vals := make([]byte, 8+n*8)
	binary.NativeEndian.PutUint32(vals[0:], unix.ETHTOOL_GSTATS)
	binary.NativeEndian.PutUint32(vals[4:], uint32(n))
	if err := ioctl(vals); err != nil {
		return nil, fmt.Errorf("ethtool -S %s: values: %w", name, err)
	}
	// The kernel may return fewer than asked when the set shrank between
	// the calls: read what both answers cover.
	n = min(n, int(binary.NativeEndian.Uint32(names[8:])), int(binary.NativeEndian.Uint32(vals[4:])))
	out := make(map[string]uint64, n)
	for i := range n {
		s := names[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		out[string(s)] = binary.NativeEndian.Uint64(vals[8+i*8:])
	}
	return out, nil
}
