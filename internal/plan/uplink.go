package plan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
)

// HostConfig is the host's own layer-3 configuration on one interface:
// what moves to a bridge when the interface becomes the bridge's uplink,
// and what goes back when it stops being one.
type HostConfig struct {
	MTU    int         `json:"mtu"`
	HWAddr string      `json:"hwaddr"`
	Addrs  []HostAddr  `json:"addrs,omitempty"`
	Routes []HostRoute `json:"routes,omitempty"`
}

// Forever is the lifetime of an address that never expires (INFINITY_LIFE_TIME).
const Forever = 0xFFFFFFFF

// HostAddr is one address with what `ip addr` shows of it.
type HostAddr struct {
	Prefix    netip.Prefix `json:"prefix"`
	Broadcast netip.Addr   `json:"broadcast,omitzero"`
	Label     string       `json:"label,omitempty"`
	Scope     int          `json:"scope"`
	// Flags are the IFA_F_* flags one may set (nodad, noprefixroute,
	// mngtmpaddr, ...); kernel-kept ones (secondary, tentative, permanent)
	// are left out.
	Flags int `json:"flags"`
	// ValidLft and PreferredLft are seconds left, or Forever.
	ValidLft     uint32 `json:"valid_lft"`
	PreferredLft uint32 `json:"preferred_lft"`
}

// Dynamic reports whether the address expires (learned by DHCP or SLAAC).
func (a HostAddr) Dynamic() bool { return a.ValidLft != Forever }

// String is the address as `ip addr add` takes it.
func (a HostAddr) String() string {
	s := a.Prefix.String()
	if a.Dynamic() {
		s += fmt.Sprintf(" valid_lft %d preferred_lft %d", a.ValidLft, a.PreferredLft)
	}
	return s
}

// HostRoute is one route through the interface, in any table, that the
// kernel did not make itself from an address (proto kernel) and that is not
// in the local table.
type HostRoute struct {
	Dst      netip.Prefix `json:"dst"` // 0.0.0.0/0 or ::/0 for default
	Gw       netip.Addr   `json:"gw,omitzero"`
	Src      netip.Addr   `json:"src,omitzero"`
	Table    int          `json:"table"`
	Metric   int          `json:"metric"`
	Protocol int          `json:"protocol"`
	Scope    int          `json:"scope"`
	Type     int          `json:"type"`
	OnLink   bool         `json:"onlink,omitempty"`
	MTU      int          `json:"mtu,omitempty"`
}

// String is the route as `ip route` prints it, without the device.
func (r HostRoute) String() string {
	var b strings.Builder
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	if r.Table != 0 && r.Table != 254 {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	if r.Protocol != 0 && r.Protocol != 3 { // 3: boot, ip route's default
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	if r.MTU != 0 {
		fmt.Fprintf(&b, " mtu %d", r.MTU)
	}
	return b.String()
}

// Uplink is what an uplink conversion needs: the bridge, and the uplink's
// configuration (before: what moves; for a release: what goes back).
type Uplink struct {
	Bridge string     `json:"bridge"`
	Config HostConfig `json:"config"`
	// Move says which addresses go to the bridge (model.HostAddress:
	// keep, dhcp and static move them, static without lifetimes; none
	// moves none).
	Move string `json:"move,omitempty"`
	// Taken is when the configuration was read (the store sets it), so a
	// release knows how much of a dynamic address's lifetime is left.
	Taken time.Time `json:"taken,omitzero"`
}

// UplinkOriginalKey is the key under which the store keeps an uplink's
// configuration from before kvmnet first converted it (Options.Originals).
func UplinkOriginalKey(uplink string) string { return "uplink:" + uplink }

// EncodeUplink and DecodeUplink store an Uplink as an original value.
func EncodeUplink(u Uplink) (string, error) {
	b, err := json.Marshal(u)
	return string(b), err
}

// DecodeUplink reads what EncodeUplink wrote.
func DecodeUplink(s string) (Uplink, error) {
	var u Uplink
	err := json.Unmarshal([]byte(s), &u)
	return u, err
}

// UplinkBridges maps the uplinks of cfg's bridged networks to their
// bridges: a nat network whose egress is one leaves through the bridge.
func UplinkBridges(cfg *model.Config) map[string]string {
	out := map[string]string{}
	for _, n := range cfg.Networks {
		if n.Mode == model.ModeBridged {
			out[n.Uplink] = n.Bridge
		}
	}
	return out
}

// NeedsHosts reports whether planning cfg needs the host configurations:
// when it has bridged networks, or an uplink may have to be given back.
func NeedsHosts(cfg *model.Config, originals map[string]string) bool {
	if len(UplinkBridges(cfg)) > 0 {
		return true
	}
	for k := range originals {
		if strings.HasPrefix(k, "uplink:") {
			return true
		}
	}
	return false
}

// uplinkOriginals returns the stored originals of uplinks, by uplink name.
func (o Options) uplinkOriginals() map[string]Uplink {
	out := map[string]Uplink{}
	for k, v := range o.Originals {
		name, ok := strings.CutPrefix(k, "uplink:")
		if !ok {
			continue
		}
		if u, err := DecodeUplink(v); err == nil {
			out[name] = u
		}
	}
	return out
}

// convertCommands prints a conversion as the commands that do it by hand.
func convertCommands(uplink string, u Uplink) string {
	var lines []string
	add := func(f string, args ...any) { lines = append(lines, fmt.Sprintf(f, args...)) }
	moved := u.Move != "none"
	if moved {
		for _, a := range u.Config.Addrs {
			s := a.String()
			if u.Move == "static" {
				s = a.Prefix.String()
			}
			add("ip addr add %s dev %s", s, u.Bridge)
		}
	}
	add("ip link set %s master %s", uplink, u.Bridge)
	if moved {
		for _, r := range u.Config.Routes {
			add("ip route replace %s dev %s", r, u.Bridge)
		}
	}
	for _, a := range u.Config.Addrs {
		add("ip addr del %s dev %s", a.Prefix, uplink)
	}
	return strings.Join(lines, "\n")
}

// releaseCommands prints a release (the inverse of a conversion).
func releaseCommands(uplink string, u Uplink) string {
	var lines []string
	add := func(f string, args ...any) { lines = append(lines, fmt.Sprintf(f, args...)) }
	for _, a := range u.Config.Addrs {
		add("ip addr add %s dev %s", a, uplink)
	}
	add("ip link set %s nomaster", uplink)
	for _, r := range u.Config.Routes {
		add("ip route replace %s dev %s", r, uplink)
	}
	for _, a := range u.Config.Addrs {
		add("ip addr del %s dev %s", a.Prefix, u.Bridge)
	}
	return strings.Join(lines, "\n")
}

// bridgedNetwork plans network i (mode bridged): its bridge, with the
// uplink's MAC, and the uplink's conversion.
func bridgedNetwork(cfg *model.Config, i int, obs *Observed, opt Options, uplinks map[string]Uplink) (create, convert []Action, err error) {
	n := &cfg.Networks[i]
	path := fmt.Sprintf("networks[%d]", i)
	u, ok := obs.Links[n.Uplink]
	switch {
	case !ok:
		return nil, nil, cfg.Errorf(path+".uplink",
			"network %q: uplink %q does not exist (interfaces: %s); name the physical interface as \"ip link\" shows it", n.Name, n.Uplink, strings.Join(obs.Names(), ", "))
	case u.Kind == "bridge" || IsOwnedTap(u):
		return nil, nil, cfg.Errorf(path+".uplink",
			"network %q: uplink %q is a %s, not a physical interface; name the NIC that connects the host to the LAN", n.Name, n.Uplink, kindName(u))
	case u.Master != "" && u.Master != n.Bridge:
		return nil, nil, cfg.Errorf(path+".uplink",
			"network %q: uplink %q is already a port of %q; an interface can be enslaved to one bridge only (release it with `ip link set %s nomaster`, or name another uplink)", n.Name, n.Uplink, u.Master, n.Uplink)
	}
	if l, ok := obs.Links[n.Bridge]; ok && opt.claimed(l) {
		create = append(create, SetAlias{Name: n.Bridge, Alias: BridgeAlias(n.Name), Prev: l.Alias})
		l.Alias = BridgeAlias(n.Name)
		obs.Links[n.Bridge] = l
	}
	l, exists := obs.Links[n.Bridge]
	switch {
	case exists && !IsOwnedBridge(l):
		return nil, nil, cfg.Errorf(path,
			"network %q: a link named %q exists and is not kvmnet's (kind %s, alias %q); set bridge: to another name or remove that link", n.Name, n.Bridge, l.Kind, l.Alias)
	case exists && l.Alias != BridgeAlias(n.Name):
		return nil, nil, cfg.Errorf(path,
			"network %q: bridge %q belongs to another kvmnet network (alias %q); give each network its own bridge:", n.Name, n.Bridge, l.Alias)
	case !exists:
		create = append(create,
			AddBridge{Name: n.Bridge, MTU: n.MTU, Alias: BridgeAlias(n.Name), HWAddr: u.HWAddr},
			SetUp{Name: n.Bridge, Up: true})
	default:
		if n.MTU != 0 && l.MTU != n.MTU {
			create = append(create, SetMTU{Name: n.Bridge, MTU: n.MTU, Prev: l.MTU})
		}
		if !l.Up {
			create = append(create, SetUp{Name: n.Bridge, Up: true})
		}
		if l.BridgeNF == "on" {
			create = append(create, BridgeNFOff{Name: n.Bridge})
		}
	}
	orig, hasOrig := uplinks[n.Uplink]
	if hasOrig && u.Master == n.Bridge && len(orig.Config.Addrs) > 0 &&
		hasAny(obs.Hosts[n.Bridge], orig.Config) != (n.HostAddress != model.HostAddressNone) {
		// hostAddress changed to or from none: give the uplink its
		// configuration back and convert it again, the new way.
		rel := orig
		rel.Bridge = n.Bridge
		conv := Uplink{Bridge: n.Bridge, Config: orig.Config, Move: string(n.HostAddress)}
		conv.Config.MTU, conv.Config.HWAddr = u.MTU, u.HWAddr
		convert = append(convert, Release{Name: n.Uplink, Uplink: rel}, Convert{Name: n.Uplink, Uplink: conv})
	}
	if u.Master != n.Bridge {
		move := obs.Hosts[n.Uplink]
		move.MTU, move.HWAddr = u.MTU, u.HWAddr
		if hasOrig && len(move.Addrs) == 0 && len(move.Routes) == 0 {
			// The bridge was deleted behind kvmnet's back and took the
			// host's addresses with it: move the ones from before.
			move.Addrs, move.Routes = orig.Config.Addrs, orig.Config.Routes
		}
		convert = append(convert, Convert{Name: n.Uplink,
			Uplink: Uplink{Bridge: n.Bridge, Config: move, Move: string(n.HostAddress)}})
	}
	if !u.Up {
		convert = append(convert, SetUp{Name: n.Uplink, Up: true})
	}
	return create, convert, nil
}

func kindName(l Link) string {
	switch {
	case IsOwnedBridge(l):
		return "kvmnet bridge"
	case IsOwnedTap(l):
		return "kvmnet tap"
	}
	return l.Kind
}

// hasAny reports whether have holds any of want's addresses.
func hasAny(have, want HostConfig) bool {
	for _, w := range want.Addrs {
		for _, h := range have.Addrs {
			if h.Prefix == w.Prefix {
				return true
			}
		}
	}
	return false
}

// defaultAfterConversion is the bridge that will hold the IPv4 default
// route once this plan has converted its uplink, when the host has none
// now (hostAddress none took it, and a rollback brings it back).
func defaultAfterConversion(cfg *model.Config, obs *Observed, orig map[string]Uplink) string {
	for _, n := range cfg.Networks {
		if n.Mode != model.ModeBridged || n.HostAddress == model.HostAddressNone {
			continue
		}
		routes := obs.Hosts[n.Uplink].Routes
		if o, ok := orig[n.Uplink]; ok {
			routes = append(routes, o.Config.Routes...)
		}
		for _, r := range routes {
			if r.Dst.Bits() == 0 && r.Dst.Addr().Is4() {
				return n.Bridge
			}
		}
	}
	return ""
}
