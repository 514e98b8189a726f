package plan

import (
	"fmt"
	"sort"
	"strings"
)

// Removal is what a plan takes away that a mistaken file would: whole
// networks (with the guests on their bridges) or most of the links kvmnet
// manages. A file that lost a section, a truncated file or an empty API
// body all look like "remove it", and the kernel cannot tell a mistake
// from an intent; so an apply that removes this much needs the user to
// say so (apply --allow-removal). destroy says so by its name.
type Removal struct {
	// Networks are the networks whose bridges the plan deletes, each as
	// "dev (bridge kv-dev, 2 ports)", sorted.
	Networks []string
	// Links is how many of the links kvmnet manages (its bridges, its
	// taps, and the guests' ports on its bridges) the plan deletes or
	// takes off their bridge; Managed is how many there are.
	Links, Managed int
}

// String says what goes, for messages and the printed plan.
func (r *Removal) String() string {
	var parts []string
	if len(r.Networks) > 0 {
		parts = append(parts, "network "+strings.Join(r.Networks, ", network "))
	}
	parts = append(parts, fmt.Sprintf("%d of the %d links kvmnet manages", r.Links, r.Managed))
	return strings.Join(parts, " and ")
}

// removal works out what p removes from what obs holds; nil when it
// removes no network and at most half of the managed links. Half, because
// an edit that removes a few guests is routine and one that removes most
// of them is rarely meant.
func removal(p *Plan, obs *Observed) *Removal {
	owned := map[string]bool{}
	for _, l := range obs.Links {
		if IsOwnedBridge(l) || IsOwnedTap(l) {
			owned[l.Name] = true
		}
	}
	ports := map[string]int{} // of kvmnet's bridges
	managed := len(owned)
	for _, l := range obs.Links {
		if l.Master != "" && IsOwnedBridge(obs.Links[l.Master]) && !owned[l.Name] {
			ports[l.Master]++
			managed++
		}
	}
	r := &Removal{Managed: managed}
	gone := map[string]bool{}
	for _, a := range p.Actions {
		switch a := a.(type) {
		case DelLink:
			if !owned[a.Link()] {
				continue
			}
			gone[a.Link()] = true
			if l := obs.Links[a.Link()]; IsOwnedBridge(l) {
				r.Networks = append(r.Networks, fmt.Sprintf("%s (bridge %s, %s)", strings.TrimPrefix(l.Alias, bridgeAliasTag), l.Name, plural(ports[l.Name], "port")))
				// Its ports leave with it.
				for _, port := range obs.Links {
					if port.Master == l.Name && !owned[port.Name] {
						gone[port.Name] = true
					}
				}
			}
		case SetMaster:
			if a.Master == "" && IsOwnedBridge(obs.Links[a.Prev]) {
				gone[a.Name] = true
			}
		}
	}
	r.Links = len(gone)
	sort.Strings(r.Networks)
	if len(r.Networks) == 0 && 2*r.Links <= r.Managed {
		return nil
	}
	return r
}

// plural is "1 port", "2 ports".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
