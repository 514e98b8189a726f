package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status is what `kvmnet lab status` shows: the lab's nodes as the kernel
// sees them now, its DHCP server and the leases it gave.
type Status struct {
	Prefix  string       `json:"prefix"`
	Dir     string       `json:"dir"`
	Created time.Time    `json:"created"`
	Config  string       `json:"config,omitempty"`
	Nodes   []NodeStatus `json:"nodes"`
	VMs     []VM         `json:"vms,omitempty"`
	// DNSMasqPID is the LAN's dnsmasq, 0 when it no longer runs.
	DNSMasqPID int `json:"dnsmasqPID"`
	// LANLeases are the leases dnsmasq gave on the LAN.
	LANLeases []LANLease `json:"lanLeases,omitempty"`
}

// NodeStatus is one node of the lab.
type NodeStatus struct {
	Node      string `json:"node"`
	Namespace string `json:"namespace"`
	// Present is false when the namespace has gone.
	Present bool `json:"present"`
	// Addrs are the IPv4 addresses, as "IFACE ADDR/LEN".
	Addrs []string `json:"addrs,omitempty"`
	// Procs counts the processes running in the namespace.
	Procs int `json:"procs"`
}

// LANLease is one line of dnsmasq's lease file.
type LANLease struct {
	Expires  time.Time `json:"expires"`
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
}

// Status observes the lab.
func (l *Lab) Status(ctx context.Context) (Status, error) {
	st := Status{Prefix: l.st.Prefix, Dir: l.st.Dir, Created: l.st.Created, Config: l.st.Config, VMs: l.VMs()}
	present, err := namespaces()
	if err != nil {
		return st, err
	}
	for _, node := range l.Nodes() {
		ns := l.NS(node)
		n := NodeStatus{Node: node, Namespace: ns, Present: slices.Contains(present, ns)}
		if n.Present {
			if n.Addrs, err = addrs(ctx, ns); err != nil {
				return st, err
			}
			out, err := run(ctx, "ip", "netns", "pids", ns)
			if err != nil {
				return st, err
			}
			n.Procs = len(strings.Fields(out))
		}
		st.Nodes = append(st.Nodes, n)
	}
	if b, err := os.ReadFile(filepath.Join(l.st.Dir, dnsmasqPid)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cmdlineContains(l.st.Dir)(pid) == nil {
			st.DNSMasqPID = pid
		}
	}
	st.LANLeases, err = readDNSMasqLeases(filepath.Join(l.st.Dir, dnsmasqLeases))
	return st, err
}

// addrs lists the IPv4 addresses of namespace ns, from `ip -j`.
func addrs(ctx context.Context, ns string) ([]string, error) {
	out, err := run(ctx, "ip", "-n", ns, "-j", "-4", "addr", "show")
	if err != nil {
		return nil, err
	}
	var links []struct {
		IfName   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("reading addresses of namespace %q: %w", ns, err)
	}
	var res []string
	for _, l := range links {
		if l.IfName == "lo" {
			continue
		}
		for _, a := range l.AddrInfo {
			res = append(res, fmt.Sprintf("%s %s/%d", l.IfName, a.Local, a.PrefixLen))
		}
	}
	return res, nil
}

// readDNSMasqLeases parses dnsmasq's lease file: "EXPIRY MAC IP HOSTNAME
// CLIENTID" per line, EXPIRY in Unix seconds, HOSTNAME "*" when unknown.
func readDNSMasqLeases(path string) ([]LANLease, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	var res []LANLease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		secs, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			continue
		}
		l := LANLease{Expires: time.Unix(secs, 0).UTC(), MAC: fs[1], IP: fs[2]}
		if fs[3] != "*" {
			l.Hostname = fs[3]
		}
		res = append(res, l)
	}
	return res, sc.Err()
}
