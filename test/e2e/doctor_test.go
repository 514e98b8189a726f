//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// doctorReport is what kvmnet doctor -o json prints.
type doctorReport struct {
	Worst    string `json:"worst"`
	Findings []struct {
		Check, Severity, Subject, Summary, Fix string
		Evidence                               []string
	} `json:"findings"`
}

// doctor runs kvmnet doctor -o json and returns its report and exit code.
func (w *world) doctor() (doctorReport, int) {
	w.t.Helper()
	out, err := w.kvmnet("doctor", "-o", "json")
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatal(err)
	}
	var r doctorReport
	// On a non-zero exit, w.kvmnet returns stdout and stderr; stderr is
	// empty when doctor only reports.
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		w.t.Fatalf("doctor -o json: %v\n%s", err, out)
	}
	return r, code
}

// TestDoctor: on a lab host as kvmnet leaves it, with its daemon and
// br_netfilter's switches off in the host's namespace, doctor finds
// nothing worse than info and exits 0; with forwarding turned off, a
// foreign table whose forward chain drops by default, a tap gone and the
// daemon stopped, it names each with its fix and exits 2.
func TestDoctor(t *testing.T) {
	w := newWorld(t, natConfig)
	w.mustKvmnet("apply", "-f", w.file)
	// br_netfilter's switches are per namespace; the lab host's are its own.
	w.mustExec("host", "sysctl", "-w", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	w.startDaemon()
	r, code := w.doctor()
	if code != 0 || (r.Worst != "ok" && r.Worst != "info") {
		t.Fatalf("healthy lab host: exit %d, worst %s: %+v", code, r.Worst, r.Findings)
	}
	w.stopDaemon()

	w.mustExec("host", "sysctl", "-w", "net.ipv4.ip_forward=0")
	w.mustExec("host", "nft", "add", "table", "ip", "foreign")
	w.mustExec("host", "nft", "add chain ip foreign gate { type filter hook forward priority 0 ; policy drop ; }")
	w.mustExec("host", "ip", "link", "del", "db1-0")
	r, code = w.doctor()
	if code != 2 || r.Worst != "critical" {
		t.Errorf("planted problems: exit %d, worst %s, want 2 and critical", code, r.Worst)
	}
	want := []struct{ check, subject, severity string }{
		{"ip-forward", "", "critical"},
		{"foreign-forward-drop", "ip foreign gate", "critical"},
		{"tap", "db1-0", "warning"},
		{"daemon", "", "critical"},
	}
	for _, x := range want {
		found := false
		for _, f := range r.Findings {
			if f.Check == x.check && f.Subject == x.subject {
				found = true
				if f.Severity != x.severity || f.Fix == "" || len(f.Evidence) == 0 {
					t.Errorf("%s %s: severity %s, fix %q, evidence %q; want %s with a fix and evidence", x.check, x.subject, f.Severity, f.Fix, f.Evidence, x.severity)
				}
				t.Logf("%s %s: %s; fix: %s", f.Severity, f.Check, f.Summary, f.Fix)
			}
		}
		if !found {
			t.Errorf("no %s finding on %q: %+v", x.check, x.subject, r.Findings)
		}
	}
}

// TestDoctorFindsEach: the problems the issue names, each made for real
// on a lab host with its daemon running: an iptables FORWARD DROP
// policy, a tap whose MTU differs from its bridge's, br_netfilter's
// switch on, an exhausted pool (one address, leased); each is reported
// with its fix, and doctor exits 2.
func TestDoctorFindsEach(t *testing.T) {
	onePool := strings.Replace(natConfig, "dhcp: {range: 192.168.100.100-192.168.100.199, lease: 1h}", "dhcp: {range: 192.168.100.100-192.168.100.100, lease: 1h}", 1)
	w := newWorld(t, onePool)
	w.mustKvmnet("apply", "-f", w.file)
	w.mustExec("host", "sysctl", "-w", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	w.startDaemon()
	if ip := w.lease("db1"); ip.String() != "192.168.100.100" {
		t.Fatalf("db1 leased %s, want the pool's one address", ip)
	}

	w.mustExec("host", "iptables", "-P", "FORWARD", "DROP")
	w.mustExec("host", "ip", "link", "set", "web1-0", "mtu", "1400")
	w.mustExec("host", "sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1")
	r, code := w.doctor()
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	want := []struct{ check, subject, severity string }{
		{"foreign-forward-drop", "ip filter FORWARD", "critical"},
		{"mtu", "web1-0", "warning"}, // the bridge followed it down: the others are not named
		{"br-netfilter", "", "warning"},
		{"dhcp-pool", "dev", "critical"},
	}
	for _, x := range want {
		found := false
		for _, f := range r.Findings {
			if f.Check != x.check || (x.subject != "" && f.Subject != x.subject) || f.Severity == "ok" {
				continue
			}
			found = true
			if f.Severity != x.severity || f.Fix == "" || len(f.Evidence) == 0 {
				t.Errorf("%s %s: severity %s, fix %q, evidence %q; want %s with a fix and evidence", x.check, f.Subject, f.Severity, f.Fix, f.Evidence, x.severity)
			}
			t.Logf("%s %s %s: %s; evidence: %s; fix: %s", f.Severity, f.Check, f.Subject, f.Summary, strings.Join(f.Evidence, "; "), f.Fix)
		}
		if !found {
			t.Errorf("no %s finding: %+v", x.check, r.Findings)
		}
	}
}
