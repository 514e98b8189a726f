package model

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from what Parse returns")

// repoRoot is where testdata lives, relative to this package.
const repoRoot = "../.."

// TestBadFiles parses every testdata/bad/X.yaml and compares the whole
// error text with X.err. Each file holds exactly one problem.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "testdata/bad/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 35 {
		t.Fatalf("found %d files in testdata/bad, want at least 35", len(files))
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse("testdata/bad/"+name+".yaml", data)
			if err == nil {
				t.Fatalf("Parse accepted it:\n%s", mustMarshal(t, c))
			}
			if n := len(Errors(err)); n != 1 {
				t.Errorf("got %d errors, want exactly 1 (one problem per file):\n%v", n, err)
			}
			got := err.Error() + "\n"
			errPath := strings.TrimSuffix(path, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(errPath, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(errPath)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("error text (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseReportsAllErrors checks that independent problems are all
// reported, sorted by position, as *Error values.
func TestParseReportsAllErrors(t *testing.T) {
	const file = `networks:
  - name: dev
    mode: nat
    subnet: 192.168.100.0/24
    forwards:
      - {port: 0, to: nobody}
  - name: Bad
    mode: nat
    subnet: 10.0.0.0/8
vms:
  - name: web1
    interfaces:
      - {network: dev, mac: 52:54:00:00:00:10, colour: blue}
`
	_, err := Parse("host.yaml", []byte(file))
	var got []string
	for _, e := range Errors(err) {
		got = append(got, e.Error())
	}
	want := []string{
		`host.yaml:6:16: networks[0].forwards[0].port: "0": port 0 is out of range (want 1 to 65535)`,
		`host.yaml:6:23: networks[0].forwards[0].to: "nobody": VM "nobody" does not exist (VMs: web1)`,
		`host.yaml:7:11: networks[1].name: "Bad" is not a valid network name (` + nameRule + `)`,
		`host.yaml:13:48: vms[0].interfaces[0]: unknown key "colour" in an interface (allowed: network, mac, ip, tap, createTap, queues, owner, security, qos, vlan)`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err.Error() != strings.Join(want, "\n") {
		t.Errorf("Error() = %s", err)
	}
	var first *Error
	if !errors.As(err, &first) || first.Line != 6 || first.Path != "networks[0].forwards[0].port" {
		t.Errorf("errors.As gave %+v, want the first error", first)
	}
}

// TestNoFollowUpErrors checks that a value that cannot be read is reported
// once, without the errors that would follow from its absence.
func TestNoFollowUpErrors(t *testing.T) {
	for _, tt := range []struct{ file, want string }{{
		// The misspelt name is not also "missing", and references to
		// the network are not "unknown".
		file: "networks:\n  - nmae: dev\n    mode: nat\n    subnet: 192.168.100.0/24\nvms:\n  - name: a\n    interfaces: [{network: dev, mac: 52:54:00:00:00:01}]\n",
		want: `x.yaml:2:5: networks[0]: unknown key "nmae" in a network; did you mean "name"? (allowed: name, mode, backend, bridge, mtu, uplink, hostAddress, subnet, gateway, dhcp, dns, egress, forwards, fastpath, vlans, uplinkVlans, egressVlan)`,
	}, {
		file: "networks:\n  - name: dev\n    mode: nat\n    subnet: 192.168.100.0/24\n    mtu: big\n",
		want: `x.yaml:5:10: networks[0].mtu: "big" is not a whole number (want e.g. 1500)`,
	}, {
		file: "networks:\n  - name: dev\n    mode: nat\n    subnet: 192.168.100.0/24\n    forwards: [{port: 80, to: a}]\nvms:\n  - name: [a]\n",
		want: `x.yaml:7:11: vms[0].name: want a single value, got a list`,
	}, {
		file: "networks:\n  - name: dev\n    mode: nat\n    subnet: 192.168.100.0/24\nvms:\n  - name: a\n    interfaces: [{network: dev, mac: 52:54:00:00:00:01, createTap: 1, queues: 2}]\n",
		want: `x.yaml:7:68: vms[0].interfaces[0].createTap: "1" is not a boolean (want true or false)`,
	}} {
		_, err := Parse("x.yaml", []byte(tt.file))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q):\ngot  %v\nwant %s", tt.file, err, tt.want)
		}
	}
}

// TestEmptyConfigs checks that a document describing no networks is
// refused with a position: applied, it would remove everything kvmnet
// manages (an empty file once did). ParseStored reads them as the empty
// desired state destroy leaves.
func TestEmptyConfigs(t *testing.T) {
	for _, tt := range []struct{ text, at string }{
		{"", "host.yaml:1:1: "},
		{"# nothing yet\n", "host.yaml:1:1: "},
		{"---\n", "host.yaml:1:1: "},
		{"\n\n# later\n---\n", "host.yaml:1:1: "},
		{"networks: []\nvms: []\n", "host.yaml:1:11: networks: "},
		{"# hosts\nnetworks:\nvms:\n", "host.yaml:2:10: networks: "},
	} {
		_, err := Parse("host.yaml", []byte(tt.text))
		if !IsNoNetworks(err) || err.Error() != tt.at+noNetworks {
			t.Errorf("Parse(%q) = %v, want %q", tt.text, err, tt.at+noNetworks)
		}
		c, err := ParseStored("host.yaml", []byte(tt.text))
		if err != nil || len(c.Networks) != 0 || len(c.VMs) != 0 {
			t.Errorf("ParseStored(%q) = %+v, %v; want the empty config", tt.text, c, err)
		}
	}
	// Not every error is the empty document's.
	if _, err := Parse("host.yaml", []byte("vms: [{name: a, interfaces: [{network: dev, mac: 52:54:00:00:00:01}]}]\n")); err == nil || IsNoNetworks(err) {
		t.Errorf("Parse of vms without networks: %v, want another error", err)
	}
}

// TestTooLarge checks that a file over MaxFileSize is refused before it is
// parsed: a 50 MB file once took 28 s and 4.1 GB to be refused.
func TestTooLarge(t *testing.T) {
	big := []byte("networks:\n" + strings.Repeat("# padding\n", MaxFileSize/10+1))
	start := time.Now()
	_, err := Parse("big.yaml", big)
	if err == nil || !strings.Contains(err.Error(), "big.yaml: the file is larger than 8 MiB") {
		t.Fatalf("Parse of %d bytes: %v", len(big), err)
	}
	t.Logf("refused in %v", time.Since(start))
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "larger than 8 MiB") {
		t.Errorf("Load of %d bytes: %v", len(big), err)
	}
	// One byte under the limit is read (and parsed: only comments here).
	if _, err := Parse("ok.yaml", big[:MaxFileSize]); !IsNoNetworks(err) {
		t.Errorf("Parse of %d bytes: %v, want it read", MaxFileSize, err)
	}
}

func TestLoad(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, "testdata/good/lab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Network("dev") == nil || c.Network("nope") != nil {
		t.Errorf("Network lookups wrong: %+v", c.Networks)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want an os.ErrNotExist", err)
	}
}

func mustMarshal(t *testing.T, c *Config) string {
	t.Helper()
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAliasBomb checks that a small file that aliases its way to millions
// of values is refused quickly instead of eating the host.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("x: &f {port: 80, to: a, from: [")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("1.2.3.4")
	}
	b.WriteString("]}\n")
	b.WriteString("networks:\n  - &n {name: a, mode: nat, subnet: 10.0.0.0/24, forwards: [" + strings.Repeat("*f, ", 999) + "*f]}\n")
	b.WriteString("  " + strings.Repeat("- *n\n  ", 999) + "- *n\n")
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "(counted with what aliases repeat)") || !strings.Contains(err.Error(), "this file has 2 anchors") {
		t.Errorf("Parse of an alias bomb: %.300v", err)
	}
}

// TestManyValues checks the message of a file that is too long without
// aliases: it must not blame aliases it does not have.
func TestManyValues(t *testing.T) {
	var b strings.Builder
	b.WriteString("networks:\n  - {name: a, mode: nat, subnet: 10.0.0.0/16, forwards: [{port: 80, to: x, from: [\n")
	for range maxValues {
		b.WriteString("1,")
	}
	b.WriteString("]}]}\n")
	_, err := Parse("long.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "the most kvmnet reads: a host with ten thousand guest interfaces") || strings.Contains(err.Error(), "anchors") {
		t.Errorf("Parse of a long file: %.400v", err)
	}
}

// TestWindowsNewlines checks that a file with \r\n line ends, comments
// included, gets the positions the user's editor shows.
func TestWindowsNewlines(t *testing.T) {
	doc := "# host\r\nnetworks:\r\n  # the nat one\r\n  - {name: dev, mode: nat, subnet: 192.168.100.0/33}\r\n"
	_, err := Parse("host.yaml", []byte(doc))
	if err == nil || !strings.HasPrefix(err.Error(), "host.yaml:4:36: networks[0].subnet:") {
		t.Errorf("Parse of a file with \\r\\n line ends: %v, want the error at 4:36", err)
	}
}
