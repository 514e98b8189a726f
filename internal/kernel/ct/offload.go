package ct

import (
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
)

// CountOffloaded counts the tracked connections a flowtable carries (the
// OFFLOAD status bit, `conntrack -L` showing [OFFLOAD]) for each of
// subnets: a connection counts for the subnet its original source is in
// (a guest's own connection) or its reply source (a connection forwarded
// into the network). The netlink socket is opened in the calling
// thread's network namespace. It dumps the whole table, about 0.8 s at
// 200,000 entries: call it for fast-path networks only.
func CountOffloaded(subnets []netip.Prefix) (map[netip.Prefix]int, error) {
	out := make(map[netip.Prefix]int, len(subnets))
	if len(subnets) == 0 {
		return out, nil
	}
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("opening conntrack netlink socket: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("dumping conntrack table: %w", err)
	}
	for _, s := range subnets {
		out[s] = 0
	}
	for _, f := range flows {
		if !f.Status.Offload() {
			continue
		}
		for _, s := range subnets {
			if s.Contains(f.TupleOrig.IP.SourceAddress) || s.Contains(f.TupleReply.IP.SourceAddress) {
				out[s]++
				break
			}
		}
	}
	return out, nil
}
