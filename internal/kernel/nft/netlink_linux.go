package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/kvmnet/kvmnet/internal/plan"
)

// The nft binary takes about 200 ms to list a table with 10,000 map
// elements (measured with nft 1.0.6); reading the same over netlink takes
// a few. Observe therefore reads the kvmnet table through google/nftables,
// and decodes elements using kvmnet's own set definitions (plan.SetType):
// it only ever reads its own table.

// fieldLen is the width of each datatype inside a concatenation, where
// every field takes whole 32-bit registers.
var fieldLen = map[string]int{"ipv4_addr": 4, "ipv6_addr": 16, "inet_proto": 4, "inet_service": 4, "ifname": 16, "ether_addr": 8}

// ObserveNetlink reads table inet kvmnet of the namespace nsFD refers to.
func ObserveNetlink(nsFD int) (plan.TableState, error) {
	return ObserveFamily(nsFD, knftables.InetFamily)
}

// families maps knftables families to the netlink library's.
var families = map[knftables.Family]nftables.TableFamily{
	knftables.InetFamily:   nftables.TableFamilyINet,
	knftables.BridgeFamily: nftables.TableFamilyBridge,
}

// ObserveFamily reads kvmnet's table of family fam.
func ObserveFamily(nsFD int, fam knftables.Family) (plan.TableState, error) {
	nfam := families[fam]
	st := plan.TableState{Chains: map[string][]string{}, Sets: plan.Elements{}}
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return st, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	table, err := c.ListTableOfFamily(plan.TableName, nfam)
	if errors.Is(err, unix.ENOENT) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading table %s %s: %w", fam, plan.TableName, err)
	}
	st.Exists = true
	if st.Flowtables, err = readFlowtables(c, table); err != nil {
		return st, err
	}
	chains, err := c.ListChainsOfTableFamily(nfam)
	if err != nil {
		return st, fmt.Errorf("listing chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != plan.TableName {
			continue
		}
		if v, ok := plan.VersionFromChain(ch.Name); ok {
			st.Comment = v
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return st, fmt.Errorf("listing rules of chain %s: %w", ch.Name, err)
		}
		comments := []string{}
		for _, r := range rules {
			comments = append(comments, ruleComment(r.UserData))
		}
		st.Chains[ch.Name] = comments
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return st, fmt.Errorf("listing sets: %w", err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		def, ok := plan.SetType(fam, s.Name)
		if !ok || def.Dynamic {
			// Not one of ours (the table is then rebuilt), or filled by
			// the kernel: the name is enough.
			st.Sets[s.Name] = []plan.Element{}
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return st, fmt.Errorf("listing elements of set %s: %w", s.Name, err)
		}
		out := make([]plan.Element, 0, len(elems))
		for _, e := range elems {
			if e.IntervalEnd {
				continue
			}
			v, err := decodeElement(def, e)
			if err != nil {
				return st, fmt.Errorf("decoding element of set %s: %w", s.Name, err)
			}
			out = append(out, v)
		}
		// Sorted, as the planner compares them (plan.Elements).
		slices.Sort(out)
		st.Sets[s.Name] = out
	}
	return st, nil
}

// ruleComment extracts the comment from a rule's user data: TLVs of
// (type, length, value), type 0 being the comment, NUL-terminated
// (libnftnl NFTNL_UDATA_RULE_COMMENT).
func ruleComment(ud []byte) string {
	for len(ud) >= 2 {
		typ, l := ud[0], int(ud[1])
		if len(ud) < 2+l {
			break
		}
		if typ == 0 {
			return strings.TrimRight(string(ud[2:2+l]), "\x00")
		}
		ud = ud[2+l:]
	}
	return ""
}

// decodeElement writes an element in the planner's normalised form.
func decodeElement(def plan.Set, e nftables.SetElement) (plan.Element, error) {
	key, err := decodeConcat(def.Type, e.Key, e.KeyEnd, def.Interval)
	if err != nil {
		return "", err
	}
	if def.Map == "" {
		return plan.NewElement(key...), nil
	}
	val, err := decodeConcat(def.Map, e.Val, nil, false)
	if err != nil {
		return "", err
	}
	return plan.NewMapElement(key, val...), nil
}

// decodeConcat decodes the fields of typ from b; for intervals, end holds
// the inclusive end of each field, and an address range is written as the
// prefix it spans.
func decodeConcat(typ string, b, end []byte, interval bool) ([]string, error) {
	types := strings.Split(typ, " . ")
	var parts []string
	off := 0
	for _, t := range types {
		n, ok := fieldLen[t]
		if !ok {
			return nil, fmt.Errorf("unknown datatype %q", t)
		}
		if len(types) == 1 && t != "ifname" {
			n = len(b) // a lone field is not padded
		}
		if off+n > len(b) {
			return nil, fmt.Errorf("element of %d bytes is too short for %s", len(b), typ)
		}
		start := b[off : off+n]
		var stop []byte
		if interval && len(end) >= off+n {
			stop = end[off : off+n]
		}
		s, err := decodeField(t, start, stop)
		if err != nil {
			return nil, err
		}
		parts = append(parts, s)
		off += n
	}
	return parts, nil
}

func decodeField(t string, b, end []byte) (string, error) {
	switch t {
	case "ipv4_addr":
		a := netip.AddrFrom4([4]byte(b[:4]))
		if end == nil {
			return a.String(), nil
		}
		z := netip.AddrFrom4([4]byte(end[:4]))
		if a == z {
			return a.String(), nil
		}
		// The range a..z is a prefix: the bits where they differ are the
		// host part.
		diff := binary.BigEndian.Uint32(b[:4]) ^ binary.BigEndian.Uint32(end[:4])
		return netip.PrefixFrom(a, bits.LeadingZeros32(diff)).String(), nil
	case "ipv6_addr":
		a := netip.AddrFrom16([16]byte(b[:16]))
		if end == nil {
			return a.String(), nil
		}
		z := netip.AddrFrom16([16]byte(end[:16]))
		if a == z {
			return a.String(), nil
		}
		// As for IPv4: the prefix length is where a and z first differ.
		n := 0
		for i := range 16 {
			if x := b[i] ^ end[i]; x != 0 {
				n = 8*i + bits.LeadingZeros8(x)
				break
			}
		}
		return netip.PrefixFrom(a, n).String(), nil
	case "inet_proto":
		switch b[0] {
		case unix.IPPROTO_TCP:
			return "tcp", nil
		case unix.IPPROTO_UDP:
			return "udp", nil
		}
		return strconv.Itoa(int(b[0])), nil
	case "inet_service":
		return strconv.Itoa(int(binary.BigEndian.Uint16(b[:2]))), nil
	case "ifname":
		return strings.TrimRight(string(b), "\x00"), nil
	case "ether_addr":
		return net.HardwareAddr(b[:6]).String(), nil
	}
	return "", fmt.Errorf("unknown datatype %q", t)
}

// DropCounters reads port security's drop counters: for every reason, the
// packets dropped per tap (the counters of the dynamic drop_REASON sets
// of the bridge table).
func DropCounters(nsFD int) (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	table, err := c.ListTableOfFamily(plan.TableName, nftables.TableFamilyBridge)
	if errors.Is(err, unix.ENOENT) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading table bridge %s: %w", plan.TableName, err)
	}
	if err := newConnectionDrops(c, out); err != nil {
		return nil, err
	}
	for _, reason := range plan.DropReasons {
		set, err := c.GetSetByName(table, plan.DropSet(reason))
		if err != nil {
			continue // an older ruleset without this reason
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("reading drop counters %s: %w", reason, err)
		}
		for _, e := range elems {
			tap := strings.TrimRight(string(e.Key), "\x00")
			if out[tap] == nil {
				out[tap] = map[string]uint64{}
			}
			if e.Counter != nil {
				out[tap][reason] = e.Counter.Packets
			}
		}
	}
	return out, nil
}

// newConnectionDrops adds to out the newConnections drops: the inet
// table counts them per guest address (conntrack says what is new only
// after routing's prerouting hook), and the bridge table's sg_ip4 (tap .
// address) says whose tap the address is bound to. Drops of an address
// no protected tap holds (spoofguard off) have no tap to be shown under.
func newConnectionDrops(c *nftables.Conn, out map[string]map[string]uint64) error {
	inet, err := c.ListTableOfFamily(plan.TableName, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading table inet %s: %w", plan.TableName, err)
	}
	set, err := c.GetSetByName(inet, plan.SetDropNewConnections)
	if err != nil {
		return nil // no guest has a newConnections rate
	}
	elems, err := c.GetSetElements(set)
	if err != nil || len(elems) == 0 {
		if err != nil {
			return fmt.Errorf("reading drop counters %s: %w", plan.ReasonNewConnections, err)
		}
		return nil
	}
	bridge, err := c.ListTableOfFamily(plan.TableName, nftables.TableFamilyBridge)
	if err != nil {
		return nil
	}
	bound, err := c.GetSetByName(bridge, plan.SetSGIP4)
	if err != nil {
		return nil
	}
	bindings, err := c.GetSetElements(bound)
	if err != nil {
		return fmt.Errorf("reading set %s: %w", plan.SetSGIP4, err)
	}
	def, _ := plan.SetType(knftables.BridgeFamily, plan.SetSGIP4)
	tapOf := map[string]string{}
	for _, b := range bindings {
		e, err := decodeElement(def, b)
		if err != nil {
			return fmt.Errorf("decoding element of set %s: %w", plan.SetSGIP4, err)
		}
		if k := e.Key(); len(k) == 2 {
			tapOf[k[1]] = k[0]
		}
	}
	for _, e := range elems {
		if len(e.Key) < 4 || e.Counter == nil {
			continue
		}
		tap, ok := tapOf[netip.AddrFrom4([4]byte(e.Key[:4])).String()]
		if !ok {
			continue
		}
		if out[tap] == nil {
			out[tap] = map[string]uint64{}
		}
		out[tap][plan.ReasonNewConnections] += e.Counter.Packets
	}
	return nil
}

// WatchDeletions reports, coalesced, that something was deleted from the
// namespace's nftables ruleset (a table, chain, rule, set or element), as
// `nft monitor` would show: `nft flush ruleset` or a firewall reload that
// takes kvmnet's tables with it. kvmnet's own applies delete things too;
// the reconcile they trigger then finds nothing to do. The channel closes
// when done is closed or the subscription fails.
func WatchDeletions(nsFD int, done <-chan struct{}) (<-chan struct{}, error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	// Subscribe to everything and pick deletions here: the library hands
	// events over when it sees the transaction's NEWGEN message, which a
	// deletions-only filter drops, so such a monitor never reports.
	mon := nftables.NewMonitor(
		nftables.WithMonitorAction(nftables.MonitorActionAny),
		nftables.WithMonitorObject(nftables.MonitorObjectAny),
	)
	events, err := c.AddMonitor(mon)
	if err != nil {
		return nil, fmt.Errorf("subscribing to nftables events: %w", err)
	}
	out := make(chan struct{}, 1)
	go func() {
		<-done
		mon.Close()
	}()
	go func() {
		defer close(out)
		for ev := range events {
			switch ev.Type {
			case nftables.MonitorEventTypeDelTable, nftables.MonitorEventTypeDelChain, nftables.MonitorEventTypeDelRule,
				nftables.MonitorEventTypeDelSet, nftables.MonitorEventTypeDelSetElem, nftables.MonitorEventTypeDelObj:
			default:
				continue
			}
			select {
			case out <- struct{}{}:
			default: // one pending signal is enough
			}
		}
	}()
	return out, nil
}
