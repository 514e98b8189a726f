package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Lease is what a VM got from a DHCP server.
type Lease struct {
	// IP is the address offered to the VM.
	IP netip.Addr `json:"ip"`
	// Prefix is IP with the subnet mask, e.g. 192.168.100.123/24.
	Prefix netip.Prefix `json:"prefix"`
	// Router is the first default gateway offered; invalid when none.
	Router netip.Addr `json:"router,omitzero"`
	// DNS are the name servers offered.
	DNS []netip.Addr `json:"dns,omitempty"`
	// Domain is the domain name offered (option 15).
	Domain string `json:"domain,omitempty"`
	// LeaseTime is how long the lease lasts.
	LeaseTime time.Duration `json:"leaseTime"`
	// ServerID identifies the DHCP server that answered.
	ServerID netip.Addr `json:"serverID,omitzero"`
	// MTU is the interface MTU offered (option 26), 0 when none.
	MTU int `json:"mtu,omitempty"`
}

// DHCP asks for a lease on iface of VM vm, as a guest would: it runs
// `udhcpc -f -q -n -t 5 -T 1 -i IFACE -s SCRIPT` in the VM's namespace,
// where SCRIPT (see DHCPScript) configures the interface, its default route
// and MTU, writes the VM's /etc/netns/PREFIX-vm-VM/resolv.conf and records
// the lease, which DHCP then returns. It gives up after five DISCOVERs a
// second apart.
func (l *Lab) DHCP(ctx context.Context, vm, iface string) (Lease, error) {
	if iface == "" {
		iface = guestIface(0)
	}
	script, err := l.DHCPScript(vm, iface)
	if err != nil {
		return Lease{}, err
	}
	leaseFile := l.leaseFile(vm, iface)
	if err := os.Remove(leaseFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Lease{}, fmt.Errorf("dhcp for VM %q %s: removing the old lease: %w", vm, iface, err)
	}
	if _, err := exec.LookPath("udhcpc"); err != nil {
		return Lease{}, fmt.Errorf("dhcp for VM %q %s: udhcpc is missing (on Debian: apt-get install udhcpc)", vm, iface)
	}
	args := []string{"udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", iface, "-s", script,
		"-O", "mtu", // not asked for by default
		"-x", "hostname:" + vm, // as guests do, so servers can name them
	}
	if _, err := l.Exec(ctx, vm, args...); err != nil {
		if strings.Contains(err.Error(), "no lease, failing") {
			return Lease{}, fmt.Errorf("dhcp for VM %q %s: no lease: nothing answered 5 DISCOVERs; check the VM's network has a DHCP server (NAT: `kvmnet --netns %s daemon` runs and the file was applied; bridged: the tap is on the bridge)",
				vm, iface, l.NS(NodeHost))
		}
		return Lease{}, fmt.Errorf("dhcp for VM %q %s: no lease: %w", vm, iface, err)
	}
	lease, err := l.ReadLease(vm, iface)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp for VM %q %s: udhcpc succeeded but %w", vm, iface, err)
	}
	l.log.Debug("dhcp lease", "vm", vm, "iface", iface, "ip", lease.Prefix, "router", lease.Router)
	return lease, nil
}

// DHCPScript writes the udhcpc event script for iface of VM vm and returns
// its path, for callers that run udhcpc themselves (say, without -q to see
// renewals, through Command). On bound and renew the script sets the
// address, the MTU if offered and the default route, writes the VM's
// resolver to /etc/netns/PREFIX-vm-VM/resolv.conf — never the machine's
// /etc/resolv.conf — and records the lease for ReadLease.
func (l *Lab) DHCPScript(vm, iface string) (string, error) {
	if err := l.checkNode(vm); err != nil {
		return "", err
	}
	if vm == NodeLAN || vm == NodeInet || vm == NodeHost {
		return "", fmt.Errorf("dhcp: %q is not a VM of lab %q", vm, l.st.Prefix)
	}
	if !validIfname(iface) {
		return "", fmt.Errorf("dhcp for VM %q: interface name %q: want 1 to 15 characters, e.g. eth0", vm, iface)
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return "", fmt.Errorf("dhcp for VM %q: ip is missing: %w", vm, err)
	}
	text, err := dhcpScript(scriptData{
		Lab:    l.st.Prefix,
		VM:     vm,
		IP:     ipPath,
		Resolv: filepath.Join(etcNetns, l.NS(vm), "resolv.conf"),
		Lease:  l.leaseFile(vm, iface),
	})
	if err != nil {
		return "", err
	}
	path := filepath.Join(l.st.Dir, "udhcpc-"+vm+"-"+iface+".sh")
	if err := writeFileAtomic(path, []byte(text), 0o755); err != nil {
		return "", fmt.Errorf("dhcp for VM %q: writing %s: %w", vm, path, err)
	}
	return path, nil
}

// ReadLease returns the last lease the script recorded for iface of VM vm.
func (l *Lab) ReadLease(vm, iface string) (Lease, error) {
	path := l.leaseFile(vm, iface)
	b, err := os.ReadFile(path)
	if err != nil {
		return Lease{}, fmt.Errorf("reading lease: %w", err)
	}
	lease, err := parseLease(string(b))
	if err != nil {
		return Lease{}, fmt.Errorf("reading lease %s: %w", path, err)
	}
	return lease, nil
}

func (l *Lab) leaseFile(vm, iface string) string {
	return filepath.Join(l.st.Dir, "lease-"+vm+"-"+iface)
}

// scriptData fills dhcpScriptTmpl. Every value is shell-quoted by the
// template.
type scriptData struct {
	Lab, VM string
	IP      string // path of the ip binary: udhcpc's PATH may lack /usr/sbin
	Resolv  string // the VM's resolv.conf under /etc/netns
	Lease   string // where the lease is recorded
}

// dhcpScriptTmpl is the udhcpc event script. udhcpc passes the event as $1
// and the lease in environment variables ($interface, $ip, $mask as prefix
// length, $router and $dns as space-separated lists, $domain, $lease in
// seconds, $serverid, $mtu, $broadcast).
var dhcpScriptTmpl = template.Must(template.New("udhcpc").Funcs(template.FuncMap{"q": shellQuote}).Parse(`#!/bin/sh
# udhcpc event script of kvmnet lab {{q .Lab}}, VM {{q .VM}}.
# It configures the guest's interface and writes the guest's own resolver
# file under /etc/netns, which ip netns exec binds over /etc/resolv.conf in
# the VM's namespace; the machine's /etc/resolv.conf is never written.
IP={{q .IP}}
RESOLV={{q .Resolv}}
LEASE={{q .Lease}}

case "$1" in
deconfig)
	"$IP" -4 addr flush dev "$interface"
	"$IP" link set dev "$interface" up
	;;
bound|renew)
	if [ -n "$mtu" ]; then
		"$IP" link set dev "$interface" mtu "$mtu" || exit 1
	fi
	if [ "$1" = bound ]; then
		"$IP" -4 addr flush dev "$interface"
	fi
	"$IP" -4 addr replace "$ip/${mask:-24}" broadcast "${broadcast:-+}" dev "$interface" || exit 1
	gw=
	for r in $router; do gw=$r; break; done
	if [ -n "$gw" ]; then
		"$IP" -4 route replace default via "$gw" dev "$interface" || exit 1
	fi
	# Written in place, not renamed: processes already in the namespace
	# have this very file bound over /etc/resolv.conf.
	{
		echo "# kvmnet lab: lease of $interface from $serverid"
		if [ -n "$domain" ]; then echo "search $domain"; fi
		for d in $dns; do echo "nameserver $d"; done
	} >"$RESOLV" || exit 1
	{
		echo "ip=$ip"
		echo "mask=${mask:-24}"
		echo "router=$router"
		echo "dns=$dns"
		echo "domain=$domain"
		echo "lease=$lease"
		echo "serverid=$serverid"
		echo "mtu=$mtu"
	} >"$LEASE.tmp" && mv "$LEASE.tmp" "$LEASE" || exit 1
	;;
esac
exit 0
`))

// dhcpScript renders the udhcpc event script.
func dhcpScript(d scriptData) (string, error) {
	var b strings.Builder
	if err := dhcpScriptTmpl.Execute(&b, d); err != nil {
		return "", fmt.Errorf("rendering the udhcpc script: %w", err)
	}
	return b.String(), nil
}

// parseLease reads what the script recorded: key=value lines.
func parseLease(text string) (Lease, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	var l Lease
	var err error
	if l.IP, err = netip.ParseAddr(kv["ip"]); err != nil {
		return Lease{}, fmt.Errorf("ip: %w", err)
	}
	bits, err := strconv.Atoi(kv["mask"])
	if err != nil || bits < 0 || bits > 32 {
		return Lease{}, fmt.Errorf("mask %q: want a prefix length 0 to 32", kv["mask"])
	}
	l.Prefix = netip.PrefixFrom(l.IP, bits)
	if f := strings.Fields(kv["router"]); len(f) > 0 {
		if l.Router, err = netip.ParseAddr(f[0]); err != nil {
			return Lease{}, fmt.Errorf("router: %w", err)
		}
	}
	for _, f := range strings.Fields(kv["dns"]) {
		a, err := netip.ParseAddr(f)
		if err != nil {
			return Lease{}, fmt.Errorf("dns: %w", err)
		}
		l.DNS = append(l.DNS, a)
	}
	l.Domain = kv["domain"]
	if s := kv["lease"]; s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil {
			return Lease{}, fmt.Errorf("lease %q: want seconds", s)
		}
		l.LeaseTime = time.Duration(secs) * time.Second
	}
	if s := kv["serverid"]; s != "" {
		if l.ServerID, err = netip.ParseAddr(s); err != nil {
			return Lease{}, fmt.Errorf("serverid: %w", err)
		}
	}
	if s := kv["mtu"]; s != "" {
		if l.MTU, err = strconv.Atoi(s); err != nil {
			return Lease{}, fmt.Errorf("mtu %q: want a number", s)
		}
	}
	return l, nil
}
