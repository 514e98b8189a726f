package feature

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/kvmnet/kvmnet/internal/plan"
)

func init() {
	checks[plan.FeatureFqCodel] = fqCodel
	checks[plan.FeatureMirred] = mirred
}

// probeVeth makes a veth pair, kvprobe0 and kvprobe1, to put what on,
// and returns the first.
func probeVeth(what string) (netlink.Link, error) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kvprobe0"}, PeerName: "kvprobe1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("%w: a veth pair to put %s on: %v", errNoScratch, what, err)
	}
	l, err := netlink.LinkByName("kvprobe0")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoScratch, err)
	}
	return l, nil
}

// fqCodel makes an fq_codel root qdisc on a veth (CONFIG_NET_SCH_FQ_CODEL).
func fqCodel() error {
	l, err := probeVeth("a qdisc")
	if err != nil {
		return err
	}
	q := netlink.NewFqCodel(netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: netlink.MakeHandle(1, 0)})
	if err := netlink.QdiscAdd(q); err != nil {
		return fmt.Errorf("an fq_codel qdisc: %w", err)
	}
	return nil
}

// mirred redirects what a veth receives to its peer, as shaping what a
// guest sends would redirect its tap's ingress to an ifb: an ingress
// qdisc, a matchall filter and the mirred action (CONFIG_NET_SCH_INGRESS,
// CONFIG_NET_CLS_MATCHALL, CONFIG_NET_ACT_MIRRED).
func mirred() error {
	l, err := probeVeth("a filter")
	if err != nil {
		return err
	}
	peer, err := netlink.LinkByName("kvprobe1")
	if err != nil {
		return fmt.Errorf("%w: %v", errNoScratch, err)
	}
	idx := l.Attrs().Index
	ing := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_INGRESS, Handle: netlink.MakeHandle(0xffff, 0)}}
	if err := netlink.QdiscAdd(ing); err != nil {
		return fmt.Errorf("an ingress qdisc: %w", err)
	}
	redirect := netlink.NewMirredAction(peer.Attrs().Index)
	f := &netlink.MatchAll{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unixETHPAll},
		Actions:     []netlink.Action{redirect},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("a matchall filter with a mirred redirect: %w", err)
	}
	return nil
}

// unixETHPAll is ETH_P_ALL in network byte order, as tc filters take it.
const unixETHPAll = 0x0300 // htons(0x0003)
