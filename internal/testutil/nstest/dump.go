package nstest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// DumpCommands are the independent views of a namespace's network state
// that tests compare before and after a change.
var DumpCommands = [][]string{
	NftTables,
	{"ip", "-d", "link", "show"},
	{"ip", "addr", "show"},
	{"ip", "route", "show", "table", "all"},
	{"sysctl", "net.ipv4.ip_forward"},
}

// NftTables lists every nftables table, in name order: `nft list ruleset`
// lists them in creation order, and restoring one table moves it last.
var NftTables = []string{"sh", "-c", `nft list tables | sort | while read -r _ fam name; do nft list table "$fam" "$name"; done`}

// volatile matches what changes by itself between two dumps of the same
// state: bridge timers that tick, meters that fill, IPv6 duplicate address detection in
// progress, address lifetimes counting down.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(_timer)\s+[0-9.]+`), "$1 -"},
	{regexp.MustCompile(` tentative`), ""},
	{regexp.MustCompile(`(valid_lft|preferred_lft) \d+sec`), "$1 -"},
	// A meter's elements are added by the packets it meters (a guest's
	// first broadcast), not by anyone's change.
	{regexp.MustCompile(`\n\s*elements = \{[^}]*limit rate over[^}]*\}`), ""},
}

// Normalize removes the volatile parts of a dump.
func Normalize(s string) string {
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.with)
	}
	return s
}

// Dump returns the normalized output of DumpCommands run in ns.
func Dump(t testing.TB, ns string) string {
	t.Helper()
	var s string
	for _, args := range DumpCommands {
		s += fmt.Sprintf("## %v\n%s", args, Run(t, ns, args...))
	}
	return Normalize(s)
}

// SemanticDump is the state of ns as it matters to traffic, without what a
// recreated link cannot keep (its ifindex, a bridge's random MAC, IPv6
// link-local addresses, carrier state): links with kind, master, alias,
// MTU and admin state; global addresses; routes other than link-local;
// the nftables ruleset; ip_forward. Undoing a deletion recreates the link,
// so rollback tests across deletions compare this.
func SemanticDump(t testing.TB, ns string) string {
	t.Helper()
	var links []struct {
		Ifname   string   `json:"ifname"`
		Master   string   `json:"master"`
		Ifalias  string   `json:"ifalias"`
		MTU      int      `json:"mtu"`
		Flags    []string `json:"flags"`
		Address  string   `json:"address"`
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
		} `json:"linkinfo"`
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(Run(t, ns, "ip", "-j", "-d", "addr", "show")), &links); err != nil {
		t.Fatalf("parsing ip -j addr: %v", err)
	}
	var lines []string
	for _, l := range links {
		up := slices.Contains(l.Flags, "UP")
		mac := l.Address
		if l.Linkinfo.InfoKind == "bridge" {
			mac = "(bridge)"
		}
		line := fmt.Sprintf("link %s kind=%s master=%s alias=%q mtu=%d up=%t mac=%s", l.Ifname, l.Linkinfo.InfoKind, l.Master, l.Ifalias, l.MTU, up, mac)
		for _, a := range l.AddrInfo {
			if a.Scope == "global" || a.Scope == "host" {
				line += fmt.Sprintf(" %s/%d", a.Local, a.Prefixlen)
			}
		}
		lines = append(lines, line)
	}
	for _, r := range strings.Split(Run(t, ns, "ip", "route", "show", "table", "all"), "\n") {
		if r == "" || strings.Contains(r, "fe80::") || strings.HasPrefix(r, "multicast ff00::") {
			continue
		}
		lines = append(lines, "route "+strings.ReplaceAll(r, " linkdown", ""))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n## nft\n" + Run(t, ns, NftTables...) + Run(t, ns, "sysctl", "net.ipv4.ip_forward")
}

// WaitDAD waits until no IPv6 address in ns is tentative: a fresh link's
// link-local address adds a local route when duplicate address detection
// ends, a change no test should mistake for its own.
func WaitDAD(t testing.TB, ns string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.TrimSpace(Run(t, ns, "ip", "-6", "addr", "show", "tentative")) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("IPv6 addresses in %s still tentative after 10s", ns)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// WithoutLinkLocal drops from a Dump what the kernel's IPv6 autoconfiguration
// makes on its own timing: link-local addresses (with their lifetime
// lines), their routes and the link-local multicast route. kvmnet manages
// none of them; whether a bridge without carrier has one yet differs
// between kernels (Debian's 6.1 adds it where this one does not).
func WithoutLinkLocal(dump string) string {
	var out []string
	skipNext := false
	for _, l := range strings.Split(dump, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case skipNext && strings.HasPrefix(t, "valid_lft"):
			skipNext = false
			continue
		case strings.HasPrefix(t, "inet6 fe80::"):
			skipNext = true
			continue
		case strings.HasPrefix(t, "fe80::/64 dev"), strings.HasPrefix(t, "local fe80::"), strings.HasPrefix(t, "multicast ff00::/8 dev"):
			continue
		}
		skipNext = false
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
