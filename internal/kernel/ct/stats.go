package ct

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stats are the connection tracking table's fill and its failure
// counters, as /proc shows them for the namespace that reads it (count
// and the per-CPU statistics are per namespace; max is the host's).
type Stats struct {
	// Loaded is false without the nf_conntrack module (no NAT network
	// yet): the files do not exist and the rest is zero.
	Loaded bool
	// Count is net.netfilter.nf_conntrack_count, Max nf_conntrack_max.
	Count, Max uint64
	// PerCPU are the columns of /proc/net/stat/nf_conntrack, each summed
	// over CPUs ("drop", "insert_failed", "early_drop", ...); nil when
	// the file is missing.
	PerCPU map[string]uint64
}

// ReadStats reads Stats under procRoot (normally "/proc"). It reads three
// small files, never the table: counting entries by a dump costs 0.76 s at
// 200,000 of them.
func ReadStats(procRoot string) (Stats, error) {
	var st Stats
	sysDir := filepath.Join(procRoot, "sys", "net", "netfilter")
	var errs []error
	for _, f := range []struct {
		name string
		v    *uint64
	}{{"nf_conntrack_count", &st.Count}, {"nf_conntrack_max", &st.Max}} {
		v, err := readUint(filepath.Join(sysDir, f.name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		*f.v, st.Loaded = v, true
	}
	sums, err := readConntrackStat(filepath.Join(procRoot, "net", "stat", "nf_conntrack"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		errs = append(errs, err)
	default:
		st.PerCPU = sums
	}
	return st, errors.Join(errs...)
}

// readConntrackStat reads /proc/net/stat/nf_conntrack (format:
// net/netfilter/nf_conntrack_standalone.c, ct_cpu_seq_show): a header of
// column names, then one row of hexadecimal counters per possible CPU.
// It returns every column summed over the rows, except "entries", which
// every row repeats (it is the table's size, not a per-CPU counter) and is
// returned once. Columns are found by name because kernels add, rename and
// retire them ("searched" became "clashres", "delete_list" "chainlength").
func readConntrackStat(path string) (map[string]uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading conntrack statistics: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	names := strings.Fields(lines[0])
	if len(names) == 0 {
		return nil, fmt.Errorf("reading conntrack statistics from %s: no header", path)
	}
	out := map[string]uint64{}
	for row, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != len(names) {
			return nil, fmt.Errorf("reading conntrack statistics from %s: row %d has %d columns, header has %d", path, row+1, len(f), len(names))
		}
		for i, n := range names {
			v, err := strconv.ParseUint(f[i], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("reading conntrack statistics from %s: %s of row %d: %w", path, n, row+1, err)
			}
			if n == "entries" {
				out[n] = v
				continue
			}
			out[n] += v
		}
	}
	return out, nil
}

// readUint reads a file holding one decimal number, as sysctls do.
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return v, nil
}
