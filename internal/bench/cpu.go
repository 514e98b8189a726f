package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// CPUTimes are the machine's aggregate CPU counters from the "cpu" line of
// /proc/stat, in clock ticks (USER_HZ). /proc/stat is not per network
// namespace: these count every CPU of the machine and every process on it,
// the bench's own iperf3 clients and servers included.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Total is the sum of the counters. Guest time is already part of user and
// nice time, so it is not added again.
func (c CPUTimes) Total() uint64 {
	return c.User + c.Nice + c.System + c.Idle + c.IOWait + c.IRQ + c.SoftIRQ + c.Steal
}

// ParseProcStat reads the aggregate "cpu" line of /proc/stat.
func ParseProcStat(r io.Reader) (CPUTimes, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		// cpu user nice system idle iowait irq softirq steal [guest guest_nice]
		if len(f) < 9 {
			return CPUTimes{}, fmt.Errorf("reading /proc/stat: cpu line has %d fields, want at least 9: %q", len(f), sc.Text())
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return CPUTimes{}, fmt.Errorf("reading /proc/stat: cpu field %d: %w", i+1, err)
			}
			v[i] = n
		}
		return CPUTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}, nil
	}
	if err := sc.Err(); err != nil {
		return CPUTimes{}, fmt.Errorf("reading /proc/stat: %w", err)
	}
	return CPUTimes{}, fmt.Errorf("reading /proc/stat: no aggregate cpu line")
}

// ReadCPU reads /proc/stat now.
func ReadCPU() (CPUTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	defer f.Close()
	return ParseProcStat(f)
}

// SysSoftIRQShare is the share, in percent of all of the machine's CPU
// time, spent in the kernel on behalf of processes (system) and in softirq
// (where forwarding, bridging, netfilter and NAT run) between two readings.
// It is NaN when no time passed.
func SysSoftIRQShare(before, after CPUTimes) float64 {
	total := float64(after.Total()) - float64(before.Total())
	if total <= 0 {
		return nan
	}
	busy := float64(after.System) - float64(before.System) + float64(after.SoftIRQ) - float64(before.SoftIRQ)
	return 100 * busy / total
}
