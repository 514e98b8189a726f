package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Files of the LAN's dnsmasq in the lab directory.
const (
	dnsmasqPid    = "dnsmasq.pid"
	dnsmasqLeases = "dnsmasq.leases"
	dnsmasqLog    = "dnsmasq.log"
	dnsmasqOut    = "dnsmasq.out" // its stdout and stderr: start-up errors land here
)

// dnsmasqReady bounds the wait for dnsmasq's first answer.
const dnsmasqReady = 10 * time.Second

// dnsmasqArgs is the command line of the LAN's DHCP server and DNS.
func dnsmasqArgs(dir string) []string {
	return []string{
		"dnsmasq",
		"--keep-in-foreground", // we hold its pid; no daemonising
		"--pid-file",           // empty: write none (the default is the machine's /run/dnsmasq)
		"--conf-file=/dev/null",
		"--no-resolv", "--no-hosts",
		"--bind-interfaces", "--interface=" + lanBridge,
		"--dhcp-range=" + DHCPFirst + "," + DHCPLast + ",1h",
		// The only DHCP server of this LAN: answer REQUESTs for leases it
		// does not know (say, after a lab restart) instead of ignoring them.
		"--dhcp-authoritative",
		// Nothing else on this LAN takes addresses from the pool, so skip
		// the ping dnsmasq sends before each offer: it holds every first
		// lease back by three seconds.
		"--no-ping",
		"--dhcp-leasefile=" + filepath.Join(dir, dnsmasqLeases),
		"--address=/" + InternetName + "/" + Internet,
		"--host-record=" + RouterName + "," + RouterLAN,
		"--log-facility=" + filepath.Join(dir, dnsmasqLog),
		"--log-dhcp", "--log-queries",
	}
}

// startDNSMasq starts dnsmasq in the router's namespace, detached from our
// session so it outlives `kvmnet lab up`, records its pid, and waits until
// it answers a DNS query.
func (b *builder) startDNSMasq(ctx context.Context) error {
	dir := b.st.Dir
	out, err := os.OpenFile(filepath.Join(dir, dnsmasqOut), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", b.ns(NodeLAN)}, dnsmasqArgs(dir)...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no SIGHUP when the terminal goes
	if err := cmd.Start(); err != nil {
		return err
	}
	// ip execs dnsmasq, so this pid is dnsmasq's.
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		// Reap it when it ends (Down kills it), so no zombie lingers in a
		// long-lived process such as a test binary.
		_ = cmd.Wait()
		close(exited)
	}()
	if err := os.WriteFile(filepath.Join(dir, dnsmasqPid), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	b.log.Debug("dnsmasq started", "pid", pid)
	return waitDNS(ctx, b.ns(NodeLAN), exited, filepath.Join(dir, dnsmasqOut))
}

// waitDNS asks the router's DNS for router.lab until the right answer comes
// back, dnsmasq exits (exited closes), or dnsmasqReady passes.
func waitDNS(ctx context.Context, lanNS string, exited <-chan struct{}, outFile string) error {
	var conn net.Conn
	err := inNetns(lanNS, func() error {
		var err error
		conn, err = net.Dial("udp", net.JoinHostPort(RouterLAN, "53"))
		return err
	})
	if err != nil {
		return fmt.Errorf("querying dnsmasq: %w", err)
	}
	defer conn.Close()
	co := &dns.Conn{Conn: conn}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(RouterName), dns.TypeA)
	return Poll(ctx, "dnsmasq to answer on "+RouterLAN+":53", dnsmasqReady, 20*time.Millisecond, func() error {
		select {
		case <-exited:
			msg, _ := os.ReadFile(outFile)
			return fmt.Errorf("dnsmasq exited: %s", strings.TrimSpace(string(msg)))
		default:
		}
		q.Id = dns.Id()
		_ = conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if err := co.WriteMsg(q); err != nil {
			return fmt.Errorf("%w: %v", ErrNotYet, err)
		}
		// Before dnsmasq binds, the kernel answers with port unreachable
		// and the read fails at once with "connection refused".
		r, err := co.ReadMsg()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotYet, err)
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok && a.A.String() == RouterLAN {
				return nil
			}
		}
		return errors.Join(ErrNotYet, fmt.Errorf("unexpected answer %v", r.Answer))
	})
}
