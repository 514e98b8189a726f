package daemon

import (
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kvmnet/kvmnet/internal/kernel/snoop"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/store"
)

// offerHold is how long an offered address stays bound to the guest it was
// offered to, waiting for the ACK (which binds it for the whole lease).
// Binding at the offer means the guest's first packets with its new
// address already pass when the ACK reaches it.
const offerHold = time.Minute

// snoopPort is a protected guest port of a bridged network.
type snoopPort struct{ network, mac string }

// snoopPorts are the protected ports of cfg's bridged networks.
func snoopPorts(cfg *model.Config) map[string]snoopPort {
	ports := map[string]snoopPort{}
	for i := range cfg.Networks {
		n := &cfg.Networks[i]
		if n.Mode != model.ModeBridged {
			continue
		}
		for _, p := range cfg.Ports(n.Name) {
			if p.Iface.Security.SpoofguardOn() {
				ports[p.Iface.Tap] = snoopPort{network: n.Name, mac: strings.ToLower(p.Iface.HWAddr)}
			}
		}
	}
	return ports
}

// syncSnooping starts the snooper the first time the desired state has
// protected ports on bridged networks; caller holds mu.
func (d *Daemon) syncSnooping() {
	if len(d.wanted().snoopPorts) == 0 || d.snooping {
		return
	}
	replies := make(chan snoop.Reply, 64)
	want := func(port string) bool {
		_, ok := d.wanted().snoopPorts[port]
		return ok
	}
	if err := d.opt.Events.Snoop(d.ctx, want, replies); err != nil {
		d.log.Error("bridged guests' addresses cannot be bound (their IPv4 stays blocked)", "err", err)
		return
	}
	d.snooping = true
	d.log.Info("snooping the LAN's DHCP replies to bridged guests")
	go d.snoopLoop(replies)
}

// snoopLoop binds bridged guests to the addresses the LAN's DHCP server
// offers and acknowledges to them, and unbinds on a NAK.
func (d *Daemon) snoopLoop(replies <-chan snoop.Reply) {
	st := d.opt.Engine.Store
	for {
		var r snoop.Reply
		select {
		case <-d.ctx.Done():
			return
		case r = <-replies:
		}
		p, ok := d.wanted().snoopPorts[r.Port]
		if !ok || p.mac != strings.ToLower(r.MAC) {
			continue // a broadcast reply for another guest, out of every port
		}
		log := d.log.With("network", p.network, "port", r.Port, "mac", p.mac, "ip", r.IP, "server", r.Server)
		var err error
		switch r.Type {
		case dhcpv4.MessageTypeNak:
			err = st.DeleteLease(p.network, p.mac)
			log.Info("lan dhcp refused the guest: unbound")
		case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck:
			hold := offerHold
			if r.Type == dhcpv4.MessageTypeAck {
				hold = r.Lease
				if hold <= 0 {
					hold = time.Hour
				}
			} else if cur, err := st.Leases(p.network); err == nil && bound(cur, p.mac, r.IP) {
				continue // an offer of what is bound already: keep the lease's expiry
			}
			err = st.PutLease(store.Lease{Network: p.network, MAC: p.mac, IP: r.IP, Expiry: time.Now().Add(hold)})
			log.Info("bound the guest to the address the lan's dhcp server gave it", "reply", r.Type.String(), "for", hold)
		}
		if err != nil {
			log.Error("recording a snooped lease", "err", err)
			continue
		}
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// bound reports whether mac holds ip for longer than an offer would.
func bound(leases []store.Lease, mac string, ip netip.Addr) bool {
	for _, l := range leases {
		if l.MAC == mac && l.IP == ip && l.Expiry.After(time.Now().Add(offerHold)) {
			return true
		}
	}
	return false
}
