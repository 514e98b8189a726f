package nstest

import (
	"fmt"
	"regexp"
	"testing"
)

// DumpCommands are the independent views of a namespace's network state
// that tests compare before and after a change.
var DumpCommands = [][]string{
	{"nft", "list", "ruleset"},
	{"ip", "-d", "link", "show"},
	{"ip", "addr", "show"},
	{"ip", "route", "show", "table", "all"},
	{"sysctl", "net.ipv4.ip_forward"},
}

// volatile matches what changes by itself between two dumps of the same
// state: bridge timers that tick, IPv6 duplicate address detection in
// progress, address lifetimes counting down.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(_timer)\s+[0-9.]+`), "$1 -"},
	{regexp.MustCompile(` tentative`), ""},
	{regexp.MustCompile(`(valid_lft|preferred_lft) \d+sec`), "$1 -"},
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
