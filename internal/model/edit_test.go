package model

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// editBase is the desired state the edit tests start from; forwardDoc
// adds forward lines (flow mappings) to dev's and test's forwards.
const editBase = `networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    forwards:
      - {port: 8080, to: web1:80}
      - {proto: udp, port: 5353, to: web1}
      - {port: 9000-9010, to: 192.168.100.20, listen: 203.0.113.10}
{DEV}  - name: test
    mode: nat
    subnet: 192.168.200.0/24
    forwards:
      - {port: 7000, to: t1}
{TEST}  - name: lan
    mode: bridged
    uplink: eth1
vms:
  - name: web1
    interfaces:
      - network: dev
        mac: 52:54:00:00:00:10
        ip: 192.168.100.10
  - name: t1
    interfaces:
      - network: test
        mac: 52:54:00:00:01:10
`

func forwardDoc(dev, test string) string {
	line := func(s string) string {
		if s == "" {
			return ""
		}
		return "      - " + s + "\n"
	}
	return strings.NewReplacer("{DEV}", line(dev), "{TEST}", line(test)).Replace(editBase)
}

// cliEdit is how `kvmnet forward add` names its arguments.
var cliEdit = Edit{Name: "kvmnet forward add", Args: map[string]string{
	"network": "--network", "proto": "--proto", "port": "--port", "to": "--to",
	"from": "--from", "listen": "--listen", "rateLimit": "--rate-limit", "force": "--force",
}}

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse("host.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("parsing:\n%s\n%v", doc, err)
	}
	return c
}

// TestWithForwardErrorsAsInFile adds forwards that a file would refuse,
// and checks that the edit refuses each with the words Parse uses for the
// same forward written in the file, naming the argument instead of a line.
func TestWithForwardErrorsAsInFile(t *testing.T) {
	tests := []struct {
		name    string
		network string
		yaml    string // the forward as a file writes it
		f       Forward
		arg     string // the argument the error names
	}{
		{"port zero", "dev", `{port: 0, to: web1}`, Forward{Port: "0", To: "web1"}, "--port"},
		{"port 70000", "dev", `{port: 70000, to: web1}`, Forward{Port: "70000", To: "web1"}, "--port"},
		{"port reversed", "dev", `{port: 5010-5000, to: web1}`, Forward{Port: "5010-5000", To: "web1"}, "--port"},
		{"port not a number", "dev", `{port: http, to: web1}`, Forward{Port: "http", To: "web1"}, "--port"},
		{"missing port", "dev", `{to: web1}`, Forward{To: "web1"}, "--port"},
		{"bad proto", "dev", `{proto: icmp, port: 1234, to: web1}`, Forward{Proto: "icmp", Port: "1234", To: "web1"}, "--proto"},
		{"bad from", "dev", `{port: 1234, to: web1, from: [10.0.0.0/8, 198.51.100.0/33]}`,
			Forward{Port: "1234", To: "web1", From: []string{"10.0.0.0/8", "198.51.100.0/33"}}, "--from"},
		{"from host bits", "dev", `{port: 1234, to: web1, from: 203.0.113.7/24}`,
			Forward{Port: "1234", To: "web1", From: []string{"203.0.113.7/24"}}, "--from"},
		{"bad listen", "dev", `{port: 1234, to: web1, listen: eth0}`, Forward{Port: "1234", To: "web1", Listen: "eth0"}, "--listen"},
		{"bad rate limit", "dev", `{port: 1234, to: web1, rateLimit: 50/s}`, Forward{Port: "1234", To: "web1", RateLimit: "50/s"}, "--rate-limit"},
		{"missing to", "dev", `{port: 1234}`, Forward{Port: "1234"}, "--to"},
		{"range sizes differ", "dev", `{port: 5000-5010, to: "web1:80-85"}`, Forward{Port: "5000-5010", To: "web1:80-85"}, "--to"},
		{"target past 65535", "dev", `{port: 5000-5010, to: "web1:65530"}`, Forward{Port: "5000-5010", To: "web1:65530"}, "--to"},
		{"to the gateway", "dev", `{port: 1234, to: "192.168.100.1:80"}`, Forward{Port: "1234", To: "192.168.100.1:80"}, "--to"},
		{"to an address outside", "dev", `{port: 1234, to: "192.168.200.10:80"}`, Forward{Port: "1234", To: "192.168.200.10:80"}, "--to"},
		{"to a bad address", "dev", `{port: 1234, to: "192.168.100.300:80"}`, Forward{Port: "1234", To: "192.168.100.300:80"}, "--to"},
		{"unknown vm", "dev", `{port: 1234, to: "web2:80"}`, Forward{Port: "1234", To: "web2:80"}, "--to"},
		{"vm not on the network", "dev", `{port: 1234, to: "t1:80"}`, Forward{Port: "1234", To: "t1:80"}, "--to"},
		{"duplicate", "dev", `{port: 8080, to: web1:81}`, Forward{Port: "8080", To: "web1:81"}, "--port"},
		{"range over a forward", "dev", `{port: 8000-8100, to: web1}`, Forward{Port: "8000-8100", To: "web1"}, "--port"},
		{"range over two forwards", "dev", `{port: 8080-9005, to: web1}`, Forward{Port: "8080-9005", To: "web1"}, "--port"},
		{"every address over one", "dev", `{port: 9005, to: web1}`, Forward{Port: "9005", To: "web1"}, "--port"},
		{"same listen address", "dev", `{port: 9005, to: web1, listen: 203.0.113.10}`,
			Forward{Port: "9005", To: "web1", Listen: "203.0.113.10"}, "--port"},
		{"duplicate across networks", "test", `{proto: udp, port: 5353, to: t1}`, Forward{Proto: "udp", Port: "5353", To: "t1"}, "--port"},
	}
	base := mustParse(t, forwardDoc("", ""))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := forwardDoc(tt.yaml, "")
			if tt.network == "test" {
				doc = forwardDoc("", tt.yaml)
			}
			_, fileErr := Parse("host.yaml", []byte(doc))
			want := Errors(fileErr)
			if len(want) != 1 {
				t.Fatalf("the file gives %d errors, want 1: %v", len(want), fileErr)
			}
			c, err := base.WithForward(tt.network, tt.f, cliEdit)
			if err == nil {
				t.Fatalf("the edit was accepted:\n%s", mustMarshal(t, c))
			}
			got := Errors(err)
			if len(got) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(got), err)
			}
			if got[0].Msg != want[0].Msg {
				t.Errorf("message (-file +edit):\n%s", cmp.Diff(want[0].Msg, got[0].Msg))
			}
			wantErr := &Error{File: "kvmnet forward add", Path: tt.arg, Msg: want[0].Msg}
			if diff := cmp.Diff(wantErr.Error(), got[0].Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
	// The config edited is never changed, even by edits that fail.
	if diff := cmp.Diff(mustParse(t, forwardDoc("", "")), base, cmpConfig); diff != "" {
		t.Errorf("the edited config changed (-before +after):\n%s", diff)
	}
}

// TestWithForwardClashLaterInFile: a file reports a clash on the later of
// the two forwards; an edit always on the forward it adds.
func TestWithForwardClashLaterInFile(t *testing.T) {
	base := mustParse(t, forwardDoc("", ""))
	_, err := base.WithForward("dev", Forward{Port: "6999-7001", To: "web1"}, cliEdit)
	const want = `kvmnet forward add: --port: tcp port "6999-7001" on every address is already forwarded by networks[1].forwards[0] of network "test" (line 13, port "7000"); use another port, or listen: on different addresses`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// TestWithForwardNetwork checks the network an edit names.
func TestWithForwardNetwork(t *testing.T) {
	base := mustParse(t, forwardDoc("", ""))
	for network, want := range map[string]string{
		"prod": `kvmnet forward add: --network: network "prod" does not exist (networks: dev, test, lan)`,
		"lan":  `kvmnet forward add: --network: network "lan" is bridged: forwards are only for mode nat (guests of a bridged network are reachable on the LAN directly)`,
	} {
		if _, err := base.WithForward(network, Forward{Port: "1", To: "web1"}, cliEdit); err == nil || err.Error() != want {
			t.Errorf("network %s: got  %v\nwant %s", network, err, want)
		}
		if _, err := base.WithoutForward(network, "8080", "", cliEdit); err == nil || err.Error() != want {
			t.Errorf("network %s, removing: got  %v\nwant %s", network, err, want)
		}
	}
	empty, err := ParseStored("host.yaml", nil) // what destroy stores
	if err != nil {
		t.Fatal(err)
	}
	const want = `kvmnet forward add: --network: network "dev" does not exist (the desired state has no networks; apply a file that defines it first)`
	if _, err := empty.WithForward("dev", Forward{Port: "1", To: "web1"}, cliEdit); err == nil || err.Error() != want {
		t.Errorf("empty config: got  %v\nwant %s", err, want)
	}
}

// TestWithForwardAsInFile: an accepted edit gives the config the file with
// the forward parses to, and leaves the config it edits alone.
func TestWithForwardAsInFile(t *testing.T) {
	tests := []struct {
		network, yaml string
		f             Forward
	}{
		{"dev", `{port: 8081, to: web1:80}`, Forward{Port: "8081", To: "web1:80"}},
		{"dev", `{proto: udp, port: 8080, to: web1}`, Forward{Proto: "udp", Port: "8080", To: "web1"}},
		{"dev", `{port: 9005, to: web1, listen: 203.0.113.11}`, Forward{Port: "9005", To: "web1", Listen: "203.0.113.11"}},
		{"dev", `{port: 5000-5010, to: "192.168.100.20:6000", from: [203.0.113.0/24, 198.51.100.7], rateLimit: 50/second, force: true}`,
			Forward{Port: "5000-5010", To: "192.168.100.20:6000", From: []string{"203.0.113.0/24", "198.51.100.7"}, RateLimit: "50/second", Force: true}},
		{"test", `{port: 8082, to: t1}`, Forward{Port: "8082", To: "t1"}},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			base := mustParse(t, forwardDoc("", ""))
			doc := forwardDoc(tt.yaml, "")
			if tt.network == "test" {
				doc = forwardDoc("", tt.yaml)
			}
			want := mustParse(t, doc)
			got, err := base.WithForward(tt.network, tt.f, cliEdit)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmpConfig); diff != "" {
				t.Errorf("config (-file +edit):\n%s", diff)
			}
			if diff := cmp.Diff(mustParse(t, forwardDoc("", "")), base, cmpConfig); diff != "" {
				t.Errorf("the edited config changed (-before +after):\n%s", diff)
			}
			// What the edit wrote reads back as the same config.
			out, _ := Marshal(got)
			if diff := cmp.Diff(want, mustParse(t, string(out)), cmpConfig); diff != "" {
				t.Errorf("marshalled edit (-file +edit):\n%s", diff)
			}
		})
	}
}

// TestEditPositions: the planner's errors about the new forward name its
// arguments; about the rest, the file's lines; after SetDoc, the lines of
// the document stored.
func TestEditPositions(t *testing.T) {
	base := mustParse(t, forwardDoc("", ""))
	c, err := base.WithForward("dev", Forward{Port: "8081", To: "web1:80"}, cliEdit)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"networks[0].forwards[3].port":      "kvmnet forward add: --port: problem",
		"networks[0].forwards[3].to":        "kvmnet forward add: --to: problem",
		"networks[0].forwards[3].rateLimit": "kvmnet forward add: --rate-limit: problem",
		"networks[0].forwards[3]":           "kvmnet forward add: problem",
		"networks[0].forwards[0].to":        "host.yaml:6:26: networks[0].forwards[0].to: problem",
		"networks[1].egress":                "host.yaml:9:5: networks[1].egress: problem",
	} {
		if got := c.Errorf(path, "problem").Error(); got != want {
			t.Errorf("Errorf(%q) = %q, want %q", path, got, want)
		}
	}
	doc, _ := Marshal(c)
	c.SetDoc("kvmnet forward add", doc)
	line := 1 + strings.Count(string(doc[:strings.Index(string(doc), "port: 8081")]), "\n")
	want := fmt.Sprintf("kvmnet forward add:%d:15: networks[0].forwards[3].port: problem", line)
	if got := c.Errorf("networks[0].forwards[3].port", "problem").Error(); got != want {
		t.Errorf("after SetDoc: got %q, want %q\n%s", got, want, doc)
	}
}

func TestWithoutForward(t *testing.T) {
	base := mustParse(t, forwardDoc("", ""))
	got, err := base.WithoutForward("dev", "5353", "udp", cliEdit)
	if err != nil {
		t.Fatal(err)
	}
	want := mustParse(t, strings.Replace(forwardDoc("", ""), "      - {proto: udp, port: 5353, to: web1}\n", "", 1))
	if diff := cmp.Diff(want, got, cmpConfig); diff != "" {
		t.Errorf("config (-file +edit):\n%s", diff)
	}
	if diff := cmp.Diff(mustParse(t, forwardDoc("", "")), base, cmpConfig); diff != "" {
		t.Errorf("the edited config changed (-before +after):\n%s", diff)
	}
	if got, err := base.WithoutForward("dev", "9000-9010", "", cliEdit); err != nil || len(got.Networks[0].Forwards) != 2 {
		t.Errorf("removing a range: %v", err)
	}
	for _, tt := range []struct{ port, proto, want string }{
		{"5353", "tcp", `kvmnet forward add: --port: network "dev" has no forward of port 5353/tcp (it has: 8080/tcp, 5353/udp, 9000-9010/tcp)`},
		{"9000", "", `kvmnet forward add: --port: network "dev" has no forward of port 9000/tcp (it has: 8080/tcp, 5353/udp, 9000-9010/tcp)`},
		{"0", "", `kvmnet forward add: --port: "0": port 0 is out of range (want 1 to 65535)`},
		{"8080", "sctp", `kvmnet forward add: --proto: "sctp" is not a protocol (want tcp or udp)`},
	} {
		if _, err := base.WithoutForward("dev", tt.port, tt.proto, cliEdit); err == nil || err.Error() != tt.want {
			t.Errorf("removing %s/%s: got  %v\nwant %s", tt.port, tt.proto, err, tt.want)
		}
	}
}

// BenchmarkWithForward times an edit among 10,000 forwards, which must
// cost far less than parsing them (see BenchmarkParseForwards).
func BenchmarkWithForward(b *testing.B) {
	c, err := Parse("bench.yaml", []byte(manyForwards(10000)))
	if err != nil {
		b.Fatal(err)
	}
	ed := Edit{Name: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.WithForward("bench", Forward{Port: "50000", To: "192.168.100.10:80"}, ed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseForwards times parsing a file with 10,000 forwards.
func BenchmarkParseForwards(b *testing.B) {
	doc := []byte(manyForwards(10000))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("bench.yaml", doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMarshalForwards times writing a config with 10,000 forwards.
func BenchmarkMarshalForwards(b *testing.B) {
	c, err := Parse("bench.yaml", []byte(manyForwards(10000)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		Marshal(c)
	}
}

// manyForwards is bench/forwards.sh's file with n forwards.
func manyForwards(n int) string {
	var b strings.Builder
	b.WriteString("networks:\n  - name: bench\n    mode: nat\n    subnet: 192.168.100.0/24\n    egress: eth0\n    forwards:\n")
	for i := range n {
		fmt.Fprintf(&b, "      - {port: %d, to: \"192.168.100.10:80\"}\n", 20000+i)
	}
	return b.String()
}

// TestIsPlain checks isPlain against the regexp it stands for.
func TestIsPlain(t *testing.T) {
	plainRE := regexp.MustCompile(`^[A-Za-z0-9_./][A-Za-z0-9_./:-]*$`)
	for _, s := range []string{"", "a", "8080", "web1:80", ":80", "-a", "a-", "5000-5010", "192.168.100.10:80",
		"a b", "é", "_x", "./x", "a/b", "x:", "10.0.0.0/8", "50/second", "a\nb", "\"", "#", "a#b", "~"} {
		if got, want := isPlain(s), plainRE.MatchString(s); got != want {
			t.Errorf("isPlain(%q) = %v, plainRE says %v", s, got, want)
		}
	}
}
