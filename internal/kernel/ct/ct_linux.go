// Package ct is kvmnet's backend over the conntrack table (ctnetlink).
package ct

import (
	"errors"
	"fmt"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// protoNumbers maps the protocols forwards use to IP protocol numbers.
var protoNumbers = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP}

// DeleteFlows deletes every tracked connection whose original destination
// is one of flows (`conntrack -D -p P --orig-dst A --orig-port-dst N`),
// and returns how many it deleted. The netlink socket is opened in the
// calling thread's network namespace.
func DeleteFlows(flows []plan.Flow) (int, error) {
	if len(flows) == 0 {
		return 0, nil
	}
	c, err := conntrack.Dial(nil)
	if err != nil {
		return 0, fmt.Errorf("opening conntrack netlink socket: %w", err)
	}
	defer c.Close()
	all, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("dumping conntrack table: %w", err)
	}
	match := map[plan.Flow]bool{}
	for _, f := range flows {
		match[f] = true
	}
	var errs []error
	n := 0
	for _, f := range all {
		o := f.TupleOrig
		key := plan.Flow{Addr: o.IP.DestinationAddress, Port: o.Proto.DestinationPort}
		for name, num := range protoNumbers {
			if num == o.Proto.Protocol {
				key.Proto = name
			}
		}
		if !match[key] {
			continue
		}
		if err := c.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("deleting connection to %s:%d/%s: %w", key.Addr, key.Port, key.Proto, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
