package nft

import (
	"fmt"
	"slices"

	"github.com/google/nftables"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// readFlowtables reads the flowtables of kvmnet's table: their names and
// devices (`nft list flowtables`). A table without flowtables, the case
// of every host without a fast-path network, costs one empty dump.
func readFlowtables(c *nftables.Conn, table *nftables.Table) (map[string]plan.Flowtable, error) {
	fts, err := c.ListFlowtables(table)
	if err != nil {
		return nil, fmt.Errorf("listing flowtables of table %s: %w", table.Name, err)
	}
	if len(fts) == 0 {
		return nil, nil
	}
	out := make(map[string]plan.Flowtable, len(fts))
	for _, ft := range fts {
		devs := slices.Clone(ft.Devices)
		slices.Sort(devs)
		out[ft.Name] = plan.Flowtable{Name: ft.Name, Devices: devs}
	}
	return out, nil
}

// refreshFlowtables reads again the flowtables of a kept reading that has
// some. The kernel takes a device out of a flowtable when the device goes
// away, without a transaction: the generation does not move, so a kept
// reading would still show the device (see Tables).
func refreshFlowtables(nsFD int, st plan.TableState) (plan.TableState, error) {
	if len(st.Flowtables) == 0 {
		return st, nil
	}
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return st, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	fts, err := readFlowtables(c, &nftables.Table{Name: plan.TableName, Family: nftables.TableFamilyINet})
	if err != nil {
		return st, err
	}
	st.Flowtables = fts
	return st, nil
}
