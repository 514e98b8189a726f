package metrics

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// netDevStats are the counters of one interface in /proc/net/dev.
type netDevStats struct {
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}

// readNetDev reads /proc/net/dev (format: net/core/net-procfs.c,
// dev_seq_printf_stats):
//
//	Inter-|   Receive                                                |  Transmit
//	 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
//	  eth0: 1234 ...
//
// Columns are found by their names in the second header line. A name wider
// than six characters runs into the colon, and a large first counter into
// the name ("verylongname:123456789012"); interface names never contain a
// colon, so the first colon ends the name.
func readNetDev(path string) (map[string]netDevStats, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading interface statistics: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("reading interface statistics from %s: no header", path)
	}
	hdr := strings.Split(lines[1], "|")
	if len(hdr) != 3 {
		return nil, fmt.Errorf("reading interface statistics from %s: unexpected header %q", path, lines[1])
	}
	cols := map[string]int{}
	rx, tx := strings.Fields(hdr[1]), strings.Fields(hdr[2])
	for i, n := range rx {
		cols["rx_"+n] = i
	}
	for i, n := range tx {
		cols["tx_"+n] = len(rx) + i
	}
	idx := func(name string) (int, error) {
		i, ok := cols[name]
		if !ok {
			return 0, fmt.Errorf("reading interface statistics from %s: no column %q in header %q", path, name, lines[1])
		}
		return i, nil
	}
	want := []struct {
		col string
		dst func(*netDevStats) *uint64
	}{
		{"rx_bytes", func(s *netDevStats) *uint64 { return &s.RxBytes }},
		{"rx_packets", func(s *netDevStats) *uint64 { return &s.RxPackets }},
		{"rx_errs", func(s *netDevStats) *uint64 { return &s.RxErrors }},
		{"rx_drop", func(s *netDevStats) *uint64 { return &s.RxDrops }},
		{"tx_bytes", func(s *netDevStats) *uint64 { return &s.TxBytes }},
		{"tx_packets", func(s *netDevStats) *uint64 { return &s.TxPackets }},
		{"tx_errs", func(s *netDevStats) *uint64 { return &s.TxErrors }},
		{"tx_drop", func(s *netDevStats) *uint64 { return &s.TxDrops }},
	}
	pos := make([]int, len(want))
	for i, w := range want {
		if pos[i], err = idx(w.col); err != nil {
			return nil, err
		}
	}
	out := map[string]netDevStats{}
	for _, line := range lines[2:] {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue // the empty last line
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if len(f) != len(rx)+len(tx) {
			return nil, fmt.Errorf("reading interface statistics from %s: interface %q has %d columns, header has %d", path, name, len(f), len(rx)+len(tx))
		}
		var s netDevStats
		for i, w := range want {
			v, err := strconv.ParseUint(f[pos[i]], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("reading interface statistics from %s: %s of %q: %w", path, w.col, name, err)
			}
			*w.dst(&s) = v
		}
		out[name] = s
	}
	return out, nil
}
