//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmnet/kvmnet/internal/lab"
	"github.com/kvmnet/kvmnet/internal/testutil/vmtest"
)

// guestConfig gives the lab's host two guests whose NICs are taps kvmnet
// creates: nat1 on a NAT network, lan1 on a bridged network over the
// uplink. No veth stands in for them: qemu attaches to the taps.
const guestConfig = `networks:
  - {name: lan, mode: bridged, uplink: eth0}
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: nat1
    interfaces: [{network: dev, mac: "52:54:00:00:00:41", tap: nat1-0, createTap: true}]
  - name: lan1
    interfaces: [{network: lan, mac: "52:54:00:00:00:42", tap: lan1-0, createTap: true}]
`

// guestInit runs in the guest: busybox's udhcpc leases an address for the
// NIC, then busybox's ping and wget reach the internet host. Each step
// prints a RESULT line on the console for the test to read. (wget has no
// -T: busybox 1.35's wget crashes with it; the test's deadline bounds it.)
const guestInit = `ip link set eth0 up
busybox udhcpc -f -q -n -t 10 -T 2 -i eth0 -s /run/vmtest/udhcpc.sh || { echo "RESULT no lease"; exit 1; }
busybox ping -c 1 -W 10 %[1]s >/dev/null && echo "RESULT ping ok"
echo "RESULT wget $(busybox wget -q -O - http://%[1]s:8000/)"
`

// guestDHCPHook configures the lease inside the guest. The guest's root
// is an overlay in its own memory: nothing it writes reaches the host, and
// this hook writes no resolv.conf at all.
const guestDHCPHook = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr add "$ip/$mask" dev "$interface"
	ip route add default via "$router"
	echo "RESULT lease $ip server $serverid"
	;;
esac
`

// httpPeer answers an HTTP request with the client's address as socat
// reports it. It reads the request up to its blank line first: closing with
// unread data would reset the connection, and the client could lose the
// answer.
const httpPeer = `cr=$(printf '\r')
while read -r line; do
	case "$line" in "$cr"|"") break ;; esac
done
printf 'HTTP/1.0 200 OK\r\n\r\n%s\n' "$SOCAT_PEERADDR"
`

// TestRealGuests boots Debian's kernel under qemu (TCG) for each guest,
// with a virtio-net NIC on its kvmnet tap: the NAT guest leases from
// kvmnet's DHCP server and reaches the internet host masqueraded as the
// KVM host; the bridged guest leases from the LAN's server and reaches the
// internet host with its own address.
func TestRealGuests(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 is not installed (make deps installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := vmtest.Prepare(ctx, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, guestConfig)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	// The internet host answers with the address it sees.
	httpScript := filepath.Join(t.TempDir(), "http.sh")
	if err := os.WriteFile(httpScript, []byte(httpPeer), 0o755); err != nil {
		t.Fatal(err)
	}
	w.serve("inet", "socat", "TCP-LISTEN:8000,reuseaddr,fork", "EXEC:sh "+httpScript)
	w.waitFor("the internet host's web server", 10*time.Second, func() bool {
		out, _ := w.exec("inet", "ss", "-Hltn", "sport = :8000")
		return strings.Contains(out, "LISTEN")
	})

	guests := []struct{ vm, tap, mac string }{
		{"nat1", "nat1-0", "52:54:00:00:00:41"},
		{"lan1", "lan1-0", "52:54:00:00:00:42"},
	}
	consoles := make([]bytes.Buffer, len(guests))
	codes := make([]int, len(guests))
	errs := make([]error, len(guests))
	start := time.Now()
	var wg sync.WaitGroup
	for i, g := range guests {
		wg.Go(func() {
			codes[i], errs[i] = vmtest.Run(ctx, k, vmtest.Options{
				Memory: 512, CPUs: 1,
				// qemu opens the tap in the KVM host's namespace.
				Wrap: []string{"ip", "netns", "exec", w.lab.NS("host")},
				QemuArgs: []string{
					"-netdev", "tap,id=n0,ifname=" + g.tap + ",script=no,downscript=no",
					"-device", "virtio-net-pci,netdev=n0,mac=" + g.mac,
				},
				Files: map[string][]byte{
					"guest.sh":  fmt.Appendf(nil, guestInit, lab.Internet),
					"udhcpc.sh": []byte(guestDHCPHook),
				},
				Output: &consoles[i],
			}, "sh", "/run/vmtest/guest.sh")
		})
	}
	wg.Wait()
	t.Logf("both guests booted, leased and ran in %s", time.Since(start).Round(time.Second))

	results := func(i int) map[string]string {
		r := map[string]string{}
		for _, m := range regexp.MustCompile(`(?m)^RESULT (\S+) ?(.*)$`).FindAllStringSubmatch(consoles[i].String(), -1) {
			r[m[1]] = strings.TrimSpace(m[2])
		}
		return r
	}
	for i, g := range guests {
		if errs[i] != nil || codes[i] != 0 {
			t.Errorf("guest %s: exit status %d, %v; console:\n%s", g.vm, codes[i], errs[i], consoles[i].String())
		}
	}

	nat := results(0)
	var ip, server string
	fmt.Sscanf(nat["lease"], "%s server %s", &ip, &server)
	if a, err := netip.ParseAddr(ip); err != nil || !netip.MustParsePrefix("192.168.100.0/24").Contains(a) || server != "192.168.100.1" {
		t.Errorf("nat1's lease: %q, want an address of 192.168.100.0/24 from kvmnet at 192.168.100.1", nat["lease"])
	}
	if nat["ping"] != "ok" {
		t.Errorf("nat1 did not ping the internet host %s", lab.Internet)
	}
	if nat["wget"] != lab.HostLAN {
		t.Errorf("the internet host sees nat1 as %q, want the KVM host's %s (masquerade)", nat["wget"], lab.HostLAN)
	}

	bridged := results(1)
	ip, server = "", ""
	fmt.Sscanf(bridged["lease"], "%s server %s", &ip, &server)
	a, err := netip.ParseAddr(ip)
	if first, last := netip.MustParseAddr(lab.DHCPFirst), netip.MustParseAddr(lab.DHCPLast); err != nil || a.Less(first) || last.Less(a) || server != lab.RouterLAN {
		t.Errorf("lan1's lease: %q, want an address of the LAN's pool from %s", bridged["lease"], lab.RouterLAN)
	}
	if bridged["ping"] != "ok" {
		t.Errorf("lan1 did not ping the internet host %s", lab.Internet)
	}
	if bridged["wget"] != ip {
		t.Errorf("the internet host sees lan1 as %q, want its own address %s (no NAT)", bridged["wget"], ip)
	}
	if t.Failed() {
		for i, g := range guests {
			t.Logf("console of %s:\n%s", g.vm, consoles[i].String())
		}
	}
}
