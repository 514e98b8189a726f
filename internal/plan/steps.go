package plan

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/knftables"
)

// The steps of addresses, uplinks, sysctls, nftables and conntrack. The
// steps of links and ports are in steps_link.go.

// AddAddr adds an address to a link.
type AddAddr struct {
	Name string
	Addr netip.Prefix
}

func (s AddAddr) Op() Op         { return OpAddAddr }
func (s AddAddr) Link() string   { return s.Name }
func (s AddAddr) String() string { return fmt.Sprintf("ip addr add %s dev %s", s.Addr, s.Name) }
func (s AddAddr) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.DelAddr(s.Name, s.Addr) }, k.AddAddr(s.Name, s.Addr)
}

// DelAddr deletes an address from a link.
type DelAddr struct {
	Name string
	Addr netip.Prefix
}

func (s DelAddr) Op() Op         { return OpDelAddr }
func (s DelAddr) Link() string   { return s.Name }
func (s DelAddr) String() string { return fmt.Sprintf("ip addr del %s dev %s", s.Addr, s.Name) }
func (s DelAddr) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.AddAddr(s.Name, s.Addr) }, k.DelAddr(s.Name, s.Addr)
}

// Convert makes an uplink the port of a bridge and moves the host's
// addresses and routes from it to the bridge; Release is its inverse.
type Convert struct {
	Name   string
	Uplink Uplink
}

func (s Convert) Op() Op         { return OpConvert }
func (s Convert) Link() string   { return s.Name }
func (s Convert) String() string { return convertCommands(s.Name, s.Uplink) }
func (s Convert) Do(_ context.Context, k Kernel, h Hooks) (Undo, error) {
	if h.BeforeConvert != nil {
		if err := h.BeforeConvert(s.Name, s.Uplink); err != nil {
			return nil, err
		}
	}
	return func() error { return k.Release(s.Name, s.Uplink) }, k.Convert(s.Name, s.Uplink)
}

// Release gives an uplink its configuration back from its bridge.
type Release struct {
	Name   string
	Uplink Uplink
}

func (s Release) Op() Op         { return OpRelease }
func (s Release) Link() string   { return s.Name }
func (s Release) String() string { return releaseCommands(s.Name, s.Uplink) }
func (s Release) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	return func() error { return k.Convert(s.Name, s.Uplink) }, k.Release(s.Name, s.Uplink)
}

// SetSysctl sets a /proc/sys value from Prev.
type SetSysctl struct {
	Key, Value, Prev string
}

func (s SetSysctl) Op() Op         { return OpSysctl }
func (s SetSysctl) Link() string   { return "" }
func (s SetSysctl) String() string { return fmt.Sprintf("sysctl -w %s=%s", s.Key, s.Value) }
func (s SetSysctl) Do(_ context.Context, k Kernel, h Hooks) (Undo, error) {
	if h.BeforeSysctl != nil {
		if err := h.BeforeSysctl(s.Key, s.Prev); err != nil {
			return nil, err
		}
	}
	return func() error { return k.SetSysctl(s.Key, s.Prev) }, k.SetSysctl(s.Key, s.Value)
}

// An *NftChange is a step too: one transaction on one table.

func (c *NftChange) Op() Op       { return OpNft }
func (c *NftChange) Link() string { return "" }
func (c *NftChange) String() string {
	tx := knftables.NewFake(c.Ruleset.Family, TableName).NewTransaction()
	c.Transaction(tx)
	return "nft -f - <<EOF\n" + tx.String() + "EOF"
}

// Do applies the change. An element edit is undone by its inverse, in one
// transaction; a rebuild or a deletion by putting the table back from a
// snapshot taken first (`nft list table` takes 200 ms with 10,000
// forwards, an element edit 5 ms, so edits take no snapshot).
func (c *NftChange) Do(ctx context.Context, k Kernel, _ Hooks) (Undo, error) {
	if !c.Rebuild && !c.Delete {
		inverse := &NftChange{Ruleset: c.Ruleset, Version: c.Version, Add: c.Del, Del: c.Add}
		// The undo must run even when ctx was cancelled.
		return func() error { return k.NftApply(context.Background(), inverse) }, k.NftApply(ctx, c)
	}
	fam := c.Ruleset.Family
	snap, err := k.NftSnapshot(ctx, fam)
	if err != nil {
		return nil, err
	}
	// The undo must run even when ctx was cancelled.
	return func() error { return k.NftRestore(context.Background(), fam, snap) }, k.NftApply(ctx, c)
}

// CutFlows deletes the tracked connections of revoked forwards. Cut
// connections cannot be restored: this step has no undo and comes last.
type CutFlows struct{ Flows []Flow }

func (s CutFlows) Op() Op       { return OpCtDelete }
func (s CutFlows) Link() string { return "" }
func (s CutFlows) String() string {
	var lines []string
	for _, f := range s.Flows {
		lines = append(lines, fmt.Sprintf("conntrack -D -p %s --orig-dst %s --orig-port-dst %d", f.Proto, f.Addr, f.Port))
	}
	return strings.Join(lines, "\n")
}

func (s CutFlows) Do(_ context.Context, k Kernel, _ Hooks) (Undo, error) {
	_, err := k.DeleteFlows(s.Flows)
	return nil, err
}
