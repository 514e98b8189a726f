//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kvmnet/kvmnet/internal/store"
)

// The load tester's guest of TestLeasesSurviveKill: a static address
// outside the pool, and no spoofguard, since perfdhcp talks as a relay from
// UDP port 67.
const leasesHost = `
networks:
  - {name: load, mode: nat, subnet: 10.60.0.0/16, egress: eth0, dhcp: {range: 10.60.128.1-10.60.255.254, lease: 1h}}
vms:
  - name: pd
    interfaces: [{network: load, mac: "52:54:00:00:60:01", ip: 10.60.0.50, tap: pd-0, security: {spoofguard: false}}]
`

// TestLeasesSurviveKill kills the daemon with SIGKILL while perfdhcp
// brings it new clients (every MAC never seen), then checks the store
// against what the clients were told: every ACK perfdhcp received is a
// lease in the store after a restart, and no address is given twice.
//
// perfdhcp cannot list the ACKs it got, so tcpdump captures them in the
// load tester's namespace, on the wire perfdhcp reads them from; a packet
// tcpdump drops only leaves an ACK unchecked, never a false failure.
func TestLeasesSurviveKill(t *testing.T) {
	requireTools(t, "perfdhcp", "tcpdump")
	w := newWorld(t, leasesHost)
	w.mustKvmnet("apply", "-f", w.file)
	w.startDaemon()
	ns := w.lab.NS("pd")
	w.mustExec("pd", "ip", "addr", "add", "10.60.0.50/16", "dev", "eth0")

	dir := t.TempDir()
	capture := filepath.Join(dir, "acks.pcap")
	dump := exec.Command("ip", "netns", "exec", ns, "tcpdump", "-i", "eth0", "-n", "-U", "-Q", "in", "-w", capture, "udp dst port 67")
	var dumpErr syncBuffer
	dump.Stderr = &dumpErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	defer dump.Process.Kill()
	w.waitFor("tcpdump to listen", 10*time.Second, func() bool { return strings.Contains(dumpErr.String(), "listening on") })

	// 2,000 new clients a second for 6 s: sequential MACs from a base of
	// the test's own, more of them than perfdhcp sends.
	perf := exec.Command("ip", "netns", "exec", ns, "perfdhcp", "-4", "-l", "10.60.0.50",
		"-r", "2000", "-p", "6", "-R", "20000", "-b", "mac=02:60:00:00:00:00", "10.60.0.1")
	var perfOut bytes.Buffer
	perf.Stdout, perf.Stderr = &perfOut, &perfOut
	if err := perf.Start(); err != nil {
		t.Fatal(err)
	}
	defer perf.Process.Kill()

	// Kill in the middle of the load: once a good number of ACKs are out.
	w.waitFor("1,000 ACKs", 20*time.Second, func() bool {
		acks, _ := readACKs(capture)
		return len(acks) >= 1000
	})
	w.stopDaemon() // SIGKILL
	killedAt := time.Now()
	perf.Wait() // exits 3 for the drops the kill made
	dump.Process.Signal(syscall.SIGINT)
	dump.Wait()
	acks, err := readACKs(capture)
	if err != nil {
		t.Fatalf("reading the capture: %v", err)
	}
	t.Logf("killed after %d ACKs captured; perfdhcp ran %s after the kill:\n%s", len(acks), time.Since(killedAt).Round(time.Second), perfSummary(perfOut.String()))
	if !strings.Contains(perfOut.String(), "drops") {
		t.Fatalf("perfdhcp gave no report:\n%s", perfOut.String())
	}

	// The restarted daemon must load the store as it is and serve.
	w.startDaemon()
	w.mustKvmnet("get", "leases")
	w.stopDaemon()

	st, err := store.Open(filepath.Join(w.state, store.File))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	leases, err := st.Leases("load")
	if err != nil {
		t.Fatal(err)
	}
	byMAC := map[string]netip.Addr{}
	byIP := map[netip.Addr]string{}
	for _, l := range leases {
		if other, ok := byIP[l.IP]; ok {
			t.Errorf("%s is leased to both %s and %s", l.IP, other, l.MAC)
		}
		byIP[l.IP] = l.MAC
		byMAC[l.MAC] = l.IP
	}
	lost := 0
	ackedIP := map[netip.Addr]string{}
	for mac, ip := range acks {
		if other, ok := ackedIP[ip]; ok {
			t.Errorf("%s was acknowledged to both %s and %s", ip, other, mac)
		}
		ackedIP[ip] = mac
		if got, ok := byMAC[mac]; !ok || got != ip {
			lost++
			if lost <= 10 {
				t.Errorf("ACKed lease %s -> %s is not in the store after the restart (store has %v)", mac, ip, got)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d ACKed leases lost", lost, len(acks))
	}
	t.Logf("%d ACKs captured, %d leases in the store", len(acks), len(leases))
}

// readACKs reads the DHCP ACKs of a pcap file tcpdump writes (Ethernet),
// by client MAC. A record cut short at the end (tcpdump still writing) is
// left out.
func readACKs(path string) (map[string]netip.Addr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 {
		return nil, nil
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, errors.New("not a pcap file")
	}
	if lt := bo.Uint32(b[20:]); lt != 1 {
		return nil, fmt.Errorf("link type %d, want Ethernet", lt)
	}
	acks := map[string]netip.Addr{}
	for p := b[24:]; len(p) >= 16; {
		n := int(bo.Uint32(p[8:]))
		if len(p) < 16+n {
			break
		}
		frame := p[16 : 16+n]
		p = p[16+n:]
		m, ok := dhcpOf(frame)
		if !ok || m.MessageType() != dhcpv4.MessageTypeAck {
			continue
		}
		ip, ok := netip.AddrFromSlice(m.YourIPAddr.To4())
		if ok && !ip.IsUnspecified() {
			acks[m.ClientHWAddr.String()] = ip
		}
	}
	return acks, nil
}

// dhcpOf reads the DHCP message of an Ethernet frame carrying IPv4 UDP.
func dhcpOf(frame []byte) (*dhcpv4.DHCPv4, bool) {
	if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return nil, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != syscall.IPPROTO_UDP || len(ip) < ihl+8 {
		return nil, false
	}
	m, err := dhcpv4.FromBytes(ip[ihl+8:])
	if err != nil || m.OpCode != dhcpv4.OpcodeBootReply || len(m.ClientHWAddr) != 6 {
		return nil, false
	}
	return m, true
}

// perfSummary keeps perfdhcp's counters.
func perfSummary(out string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "***") || strings.HasPrefix(l, "sent packets") || strings.HasPrefix(l, "received packets") || strings.HasPrefix(l, "drops") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
