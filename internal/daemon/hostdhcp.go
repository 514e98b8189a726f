package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"

	"github.com/kvmnet/kvmnet/internal/hostdhcp"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// hostClient keeps the host's address on a bridged network's bridge leased.
type hostClient struct {
	*hostdhcp.Client
	bridge string
	want   netip.Prefix
	stop   context.CancelFunc
}

// hostLease says whether the host's address on bridged network n comes
// from the LAN's DHCP server, and which address to ask for: with
// hostAddress dhcp always; with keep when the uplink had learned an IPv4
// address by DHCP (a finite lifetime) before kvmnet moved it; static and
// none never.
func (d *Daemon) hostLease(n *model.Network) (netip.Prefix, bool) {
	var want netip.Prefix
	if n.HostAddress == model.HostAddressStatic || n.HostAddress == model.HostAddressNone {
		return want, false
	}
	dynamic := false
	if orig, err := d.opt.Engine.Store.Originals(); err == nil {
		if u, err := plan.DecodeUplink(orig[plan.UplinkOriginalKey(n.Uplink)]); err == nil {
			for _, a := range u.Config.Addrs {
				if a.Prefix.Addr().Is4() && a.Dynamic() {
					want, dynamic = a.Prefix, true
					break
				}
			}
		}
	}
	return want, dynamic || n.HostAddress == model.HostAddressDHCP
}

// syncHostDHCP starts and stops the host's DHCP clients so that one runs
// for every bridged network that needs it; caller holds mu.
func (d *Daemon) syncHostDHCP(cfg *model.Config) {
	seen := map[string]bool{}
	for i := range cfg.Networks {
		n := &cfg.Networks[i]
		if n.Mode != model.ModeBridged {
			continue
		}
		want, on := d.hostLease(n)
		if !on {
			continue
		}
		seen[n.Name] = true
		if c, ok := d.hostDHCP[n.Name]; ok && c.bridge == n.Bridge && c.want == want {
			continue
		} else if ok {
			c.stop()
		}
		hostname, _ := os.Hostname()
		log := d.log.With("network", n.Name, "bridge", n.Bridge)
		c, err := hostdhcp.New(hostdhcp.Config{Iface: n.Bridge, Log: log, Want: want, Hostname: hostname})
		if err != nil {
			log.Error("starting the host's dhcp client", "err", err)
			continue
		}
		ctx, stop := context.WithCancel(d.ctx)
		d.hostDHCP[n.Name] = &hostClient{Client: c, bridge: n.Bridge, want: want, stop: stop}
		go c.Run(ctx)
		log.Info("keeping the host's address leased by dhcp", "want", want)
	}
	for name, c := range d.hostDHCP {
		if !seen[name] {
			// The lease stays with its lifetime; destroy gives the uplink
			// its own configuration back.
			c.stop()
			delete(d.hostDHCP, name)
		}
	}
}

// hostLeaseNote describes a host DHCP client for `kvmnet get networks`.
func hostLeaseNote(s hostdhcp.Status) string {
	switch {
	case s.Address.IsValid():
		return fmt.Sprintf("host address %s leased by dhcp from %s (%s), expires %s", s.Address, s.Server, s.State, s.Expires.UTC().Format("2006-01-02T15:04:05Z"))
	case s.LastError != "":
		return fmt.Sprintf("host dhcp client %s: %s", s.State, s.LastError)
	}
	return fmt.Sprintf("host dhcp client %s", s.State)
}
