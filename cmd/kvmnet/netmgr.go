package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/vishvananda/netns"

	"github.com/kvmnet/kvmnet/internal/kernel/link"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/netmgr"
)

// noteManagers tells, after an apply, which other network manager also
// manages the uplink of a bridged network, and what to write in its
// configuration so that the bridge survives a reboot. kvmnet does not edit
// other managers' files: the admin decides. Only the machine's own
// namespace has managers; in another (a lab) their files describe a
// different world, so nothing is said.
func noteManagers(w io.Writer, file string, doc []byte) {
	if !bytes.Contains(doc, []byte("bridged")) {
		return // spare a large file the parse
	}
	if init, err := netmgr.InInitNetns(); err != nil || !init {
		return
	}
	cfg, err := model.Parse(file, doc)
	if err != nil {
		return
	}
	h, err := link.New(netns.None())
	if err != nil {
		return
	}
	defer h.Close()
	hosts, err := h.HostConfigs()
	if err != nil {
		return
	}
	_, gw, _ := h.DefaultRoute()
	for _, n := range cfg.Networks {
		if n.Mode != model.ModeBridged {
			continue
		}
		ifc, err := net.InterfaceByName(n.Uplink)
		if err != nil {
			continue
		}
		b := netmgr.Bridge{Name: n.Bridge, Uplink: n.Uplink, MAC: ifc.HardwareAddr, DHCP: n.HostAddress == model.HostAddressDHCP}
		if n.HostAddress != model.HostAddressNone {
			for _, a := range hosts[n.Bridge].Addrs {
				if a.Dynamic() && a.Prefix.Addr().Is4() && n.HostAddress == model.HostAddressKeep {
					b.DHCP = true
				}
				if !a.Dynamic() {
					b.Addresses = append(b.Addresses, a.Prefix)
				}
			}
			if gw.IsValid() {
				b.Gateways = []netip.Addr{gw}
			}
		}
		if msg := netmgr.Message(netmgr.Detect("/", n.Uplink, ifc.Index), b); msg != "" {
			fmt.Fprintf(w, "\nnote: %s\n", msg)
		}
	}
}
