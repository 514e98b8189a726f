package dhcp

import (
	"errors"
	"net/netip"
	"sort"
	"time"

	"github.com/kvmnet/kvmnet/internal/store"
)

const (
	// offerHold is how long an offered address stays set aside for the
	// client it was offered to. Clients answer an OFFER within seconds; the
	// hold stops two clients that DISCOVER at once from being offered the
	// same address.
	offerHold = 30 * time.Second
	// declineHold is how long an address a client DECLINEd (it found the
	// address already in use, RFC 2131 4.3.3) is kept out of the pool. The
	// squatter may go away; dnsmasq uses the same ten minutes.
	declineHold = 10 * time.Minute
)

// errExhausted means no address can be offered.
var errExhausted = errors.New("address pool exhausted")

type offer struct {
	ip    netip.Addr
	until time.Time
}

// allocator decides which address a client gets. It holds no locks and does
// no I/O: the Server serialises calls and persists the leases it returns.
type allocator struct {
	cfg        Config
	reserved   map[string]Reservation // by MAC
	reservedIP map[netip.Addr]string  // IP -> MAC
	leases     map[string]store.Lease // by MAC; expired ones are kept
	holder     map[netip.Addr]string  // IP -> MAC of leases
	offers     map[string]offer       // by MAC; ended ones may stay
	declined   map[netip.Addr]time.Time

	// The index of the range, kept with every change to the maps above
	// (refresh): pool has the free addresses; offerIP the MAC of each
	// live offer by address; offerEnds and declineEnds when offers and
	// declines end, so their addresses come back to the pool.
	pool                   *poolIndex
	offerIP                map[netip.Addr]string
	offerEnds, declineEnds expiries
}

// newAllocator builds an allocator for a validated cfg with the persisted
// leases. When two leases claim one address (only after hand edits or a
// config change), the one that expires last keeps it; the MACs of the losers
// are returned so their stale records can be deleted.
func newAllocator(cfg Config, leases []store.Lease) (*allocator, []string) {
	a := &allocator{
		leases:   map[string]store.Lease{},
		holder:   map[netip.Addr]string{},
		offers:   map[string]offer{},
		declined: map[netip.Addr]time.Time{},
		offerIP:  map[netip.Addr]string{},
	}
	a.setConfig(cfg)
	sorted := append([]store.Lease(nil), leases...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Expiry.Before(sorted[j].Expiry) })
	var stale []string
	for _, l := range sorted {
		if prev, ok := a.holder[l.IP]; ok {
			delete(a.leases, prev)
			stale = append(stale, prev)
		}
		if old, ok := a.leases[l.MAC]; ok {
			delete(a.holder, old.IP)
		}
		a.leases[l.MAC] = l
		a.holder[l.IP] = l.MAC
	}
	a.reindex()
	return a, stale
}

// reindex builds the index of the range from scratch.
func (a *allocator) reindex() {
	a.pool = newPoolIndex(a.cfg.RangeStart, a.cfg.RangeEnd)
	for ip := a.cfg.RangeStart; ip.IsValid() && !a.cfg.RangeEnd.Less(ip); ip = ip.Next() {
		a.refresh(ip)
	}
}

// refresh sets the index's bit of ip from the maps.
func (a *allocator) refresh(ip netip.Addr) {
	_, held := a.holder[ip]
	_, offered := a.offerIP[ip]
	_, declined := a.declined[ip]
	a.pool.set(ip, held || offered || declined || !a.inPool(ip))
}

// expire returns the addresses of offers and declines that ended at now
// to the pool. The offers themselves stay: a client that took its time
// may still REQUEST what it was offered, if nobody took it since.
func (a *allocator) expire(now time.Time) {
	for {
		x, ok := a.offerEnds.pop(now)
		if !ok {
			break
		}
		if o := a.offers[x.mac]; o.ip == x.ip && now.Before(o.until) {
			continue // offered again since, and a later entry ends it
		}
		if a.offerIP[x.ip] == x.mac {
			delete(a.offerIP, x.ip)
			a.refresh(x.ip)
		}
	}
	for {
		x, ok := a.declineEnds.pop(now)
		if !ok {
			break
		}
		if until, ok := a.declined[x.ip]; ok && !now.Before(until) {
			delete(a.declined, x.ip)
			a.refresh(x.ip)
		}
	}
}

// dropOffer forgets the offer of mac.
func (a *allocator) dropOffer(mac string) {
	o, ok := a.offers[mac]
	if !ok {
		return
	}
	delete(a.offers, mac)
	if a.offerIP[o.ip] == mac {
		delete(a.offerIP, o.ip)
		a.refresh(o.ip)
	}
}

// setConfig switches to a new validated config. Leases are kept even when
// they no longer fit: their owners are refused on their next request and go
// back to DISCOVER. Offers that no longer fit are dropped.
func (a *allocator) setConfig(cfg Config) {
	a.cfg = cfg
	a.reserved = make(map[string]Reservation, len(cfg.Reservations))
	a.reservedIP = make(map[netip.Addr]string, len(cfg.Reservations))
	for _, r := range cfg.Reservations {
		a.reserved[r.MAC] = r
		a.reservedIP[r.IP] = r.MAC
	}
	for mac, o := range a.offers {
		if r, ok := a.reserved[mac]; (ok && r.IP != o.ip) || (!ok && !a.inPool(o.ip)) || (a.reservedIP[o.ip] != "" && a.reservedIP[o.ip] != mac) {
			delete(a.offers, mac)
			if a.offerIP[o.ip] == mac {
				delete(a.offerIP, o.ip)
			}
		}
	}
	// The range or the reservations may have changed.
	a.reindex()
}

// inPool reports whether ip is one the pool may hand out to a client without
// a reservation, ignoring who holds it.
func (a *allocator) inPool(ip netip.Addr) bool {
	c := &a.cfg
	if ip.Less(c.RangeStart) || c.RangeEnd.Less(ip) || !hostAddr(c.Subnet, ip) {
		return false
	}
	if ip == c.ServerIP || ip == c.Router {
		return false
	}
	_, res := a.reservedIP[ip]
	return !res
}

// free reports whether pool address ip may go to mac at time now. An address
// whose lease by another MAC has expired counts as free only when reclaim is
// set, so expired leases are reused only when the pool has nothing else.
func (a *allocator) free(ip netip.Addr, mac string, now time.Time, reclaim bool) bool {
	if !a.inPool(ip) {
		return false
	}
	if until, ok := a.declined[ip]; ok {
		if now.Before(until) {
			return false
		}
		delete(a.declined, ip)
		a.refresh(ip)
	}
	return a.usable(ip, mac, now, reclaim)
}

// usable is free without the decline check: ip is in the pool and nobody
// else holds it by an offer or a lease.
func (a *allocator) usable(ip netip.Addr, mac string, now time.Time, reclaim bool) bool {
	if !a.inPool(ip) {
		return false
	}
	if m, ok := a.offerIP[ip]; ok && m != mac {
		if o := a.offers[m]; o.ip == ip && now.Before(o.until) {
			return false
		}
	}
	if m, ok := a.holder[ip]; ok && m != mac {
		if !a.leases[m].Expired(now) || !reclaim {
			return false
		}
	}
	return true
}

// discover picks the address to offer mac and sets it aside for offerHold.
// requested is the address the client asked for (option 50), if any.
func (a *allocator) discover(mac string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	a.expire(now)
	ip, err := a.pick(mac, requested, now)
	if err != nil {
		return ip, err
	}
	if o, ok := a.offers[mac]; ok && o.ip != ip {
		a.dropOffer(mac)
	}
	o := offer{ip: ip, until: now.Add(offerHold)}
	a.offers[mac] = o
	a.offerIP[ip] = mac
	a.refresh(ip)
	a.offerEnds.push(expiry{mac: mac, ip: ip, until: o.until})
	return ip, nil
}

func (a *allocator) pick(mac string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	// A reservation always wins, even over a stale lease of someone else:
	// the reserved address is the guest's by configuration.
	if r, ok := a.reserved[mac]; ok {
		return r.IP, nil
	}
	// An offer still held for this client, so a repeated DISCOVER gets the
	// same answer. It may have been a reclaimed address.
	if o, ok := a.offers[mac]; ok && now.Before(o.until) && a.free(o.ip, mac, now, true) {
		return o.ip, nil
	}
	// The client's own lease, expired or not: guests keep their address
	// for as long as nobody else needed it.
	if l, ok := a.leases[mac]; ok && a.free(l.IP, mac, now, false) {
		return l.IP, nil
	}
	if requested.IsValid() && a.free(requested, mac, now, false) {
		return requested, nil
	}
	// The lowest address that was never leased, nor is offered or
	// declined.
	if ip, ok := a.pool.first(); ok && a.free(ip, mac, now, false) {
		return ip, nil
	}
	// Nothing never-used is left: take the address whose lease expired the
	// longest ago, as its owner is the least likely to come back.
	var best store.Lease
	for m, l := range a.leases {
		if m == mac || !l.Expired(now) || a.holder[l.IP] != m || !a.free(l.IP, mac, now, true) {
			continue
		}
		if !best.IP.IsValid() || l.Expiry.Before(best.Expiry) || (l.Expiry.Equal(best.Expiry) && l.IP.Less(best.IP)) {
			best = l
		}
	}
	if best.IP.IsValid() {
		return best.IP, nil
	}
	// Declined addresses come last, the one whose hold ends first. A
	// DECLINE only says some host answered for the address; a pool held
	// empty by DECLINEs would let one guest starve every other, so they
	// never keep an address from a client that has no other.
	var last netip.Addr
	var lastUntil time.Time
	for ip, until := range a.declined {
		if !a.usable(ip, mac, now, false) {
			continue
		}
		if !last.IsValid() || until.Before(lastUntil) || (until.Equal(lastUntil) && ip.Less(last)) {
			last, lastUntil = ip, until
		}
	}
	if last.IsValid() {
		return last, nil
	}
	return netip.Addr{}, errExhausted
}

// canLease reports whether mac may have a lease on ip now, which is what a
// REQUEST asks. A client with a reservation may only have its reserved
// address; others may have a pool address nobody else holds, or one they
// were offered (which may be a reclaimed expired lease).
func (a *allocator) canLease(mac string, ip netip.Addr, now time.Time) bool {
	a.expire(now)
	if r, ok := a.reserved[mac]; ok {
		return ip == r.IP
	}
	o, offered := a.offers[mac]
	if offered && o.ip == ip {
		// It may be a declined address offered as the last resort.
		return a.usable(ip, mac, now, true)
	}
	return a.free(ip, mac, now, false)
}

// active reports whether mac holds an unexpired lease or a live offer.
func (a *allocator) active(mac string, now time.Time) bool {
	if o, ok := a.offers[mac]; ok && now.Before(o.until) {
		return true
	}
	l, ok := a.leases[mac]
	return ok && a.holder[l.IP] == mac && !l.Expired(now)
}

// lease returns the lease mac gets on ip if it is granted now. It does not
// record it: the caller persists it first and then calls commit, so a failed
// write leaves memory and disk agreeing.
func (a *allocator) lease(mac string, ip netip.Addr, hostname string, now time.Time) store.Lease {
	if r, ok := a.reserved[mac]; ok && r.Hostname != "" {
		hostname = r.Hostname
	}
	return store.Lease{
		Network:  a.cfg.Network,
		MAC:      mac,
		Hostname: hostname,
		IP:       ip,
		Expiry:   now.Add(a.cfg.LeaseTime).Truncate(time.Second),
	}
}

// commit records l and returns the MAC, if any, whose lease on the same
// address it displaced (an expired lease reclaimed, or a lease on an address
// since reserved for l.MAC); the caller deletes that record. The caller
// also writes l, and should the write fail, hands back u to undo.
func (a *allocator) commit(l store.Lease) (displaced string, u undo) {
	u = undo{lease: l}
	u.prev, u.hadPrev = a.leases[l.MAC]
	u.offer, u.hadOffer = a.offers[l.MAC]
	u.declined, u.wasDeclined = a.declined[l.IP]
	if old, ok := a.leases[l.MAC]; ok && a.holder[old.IP] == l.MAC {
		delete(a.holder, old.IP)
		a.refresh(old.IP)
	}
	if m, ok := a.holder[l.IP]; ok && m != l.MAC {
		u.displaced = a.leases[m]
		delete(a.leases, m)
		displaced = m
	}
	a.leases[l.MAC] = l
	a.holder[l.IP] = l.MAC
	a.dropOffer(l.MAC)
	delete(a.declined, l.IP)
	a.refresh(l.IP)
	return displaced, u
}

// undo is what commit changed.
type undo struct {
	lease           store.Lease
	prev, displaced store.Lease
	hadPrev         bool
	offer           offer
	hadOffer        bool
	declined        time.Time
	wasDeclined     bool
}

// rollback puts back what commit changed, for a lease that could not be
// written, unless the client has moved on since (its lease is another
// now). The records commit replaced are still on disk, so memory and
// disk agree again.
func (a *allocator) rollback(u undo) {
	l := u.lease
	if a.leases[l.MAC] != l {
		return
	}
	delete(a.leases, l.MAC)
	if a.holder[l.IP] == l.MAC {
		delete(a.holder, l.IP)
	}
	if d := u.displaced; d.IP.IsValid() {
		if _, taken := a.leases[d.MAC]; !taken {
			if _, held := a.holder[d.IP]; !held {
				a.leases[d.MAC] = d
				a.holder[d.IP] = d.MAC
			}
		}
	}
	if p := u.prev; u.hadPrev {
		a.leases[l.MAC] = p
		if _, held := a.holder[p.IP]; !held {
			a.holder[p.IP] = l.MAC
		}
		a.refresh(p.IP)
	}
	if u.hadOffer {
		if _, ok := a.offers[l.MAC]; !ok {
			a.offers[l.MAC] = u.offer
			if _, ok := a.offerIP[u.offer.ip]; !ok {
				a.offerIP[u.offer.ip] = l.MAC
			}
			a.offerEnds.push(expiry{mac: l.MAC, ip: u.offer.ip, until: u.offer.until})
			a.refresh(u.offer.ip)
		}
	}
	if u.wasDeclined {
		if _, ok := a.declined[l.IP]; !ok {
			a.declined[l.IP] = u.declined
			a.declineEnds.push(expiry{ip: l.IP, until: u.declined})
		}
	}
	a.refresh(l.IP)
}

// release ends mac's lease on ip now (RFC 2131 4.3.4). The record stays, as
// an expired lease, so the guest gets the same address back if it returns
// before the pool needs it. It returns the updated lease to persist.
func (a *allocator) release(mac string, ip netip.Addr, now time.Time) (store.Lease, bool) {
	a.dropOffer(mac)
	l, ok := a.leases[mac]
	if !ok || l.IP != ip || l.Expired(now) {
		return store.Lease{}, false
	}
	l.Expiry = now
	a.leases[mac] = l
	return l, true
}

// decline handles a client reporting ip already in use (RFC 2131 4.3.3).
// Only the client the address was offered or leased to can decline it:
// anyone else's DECLINE would take addresses out of the pool at will. The
// address then leaves the pool for declineHold (or until nothing else is
// left, see pick) and mac loses its lease on it. It reports whether the
// decline was taken and whether a lease record was removed.
func (a *allocator) decline(mac string, ip netip.Addr, now time.Time) (declined, removed bool) {
	o, offered := a.offers[mac]
	l, leased := a.leases[mac]
	offered = offered && o.ip == ip && now.Before(o.until)
	leased = leased && l.IP == ip && a.holder[ip] == mac
	if !offered && !leased {
		return false, false
	}
	a.dropOffer(mac)
	if _, ok := a.reservedIP[ip]; !ok {
		a.declined[ip] = now.Add(declineHold)
		a.declineEnds.push(expiry{ip: ip, until: now.Add(declineHold)})
	}
	if leased {
		delete(a.leases, mac)
		delete(a.holder, ip)
	}
	a.refresh(ip)
	return true, leased
}

// forgetOffer drops mac's pending offer, when the client chose another
// server.
func (a *allocator) forgetOffer(mac string) { a.dropOffer(mac) }

// all returns every lease record, expired ones included, sorted by IP.
func (a *allocator) all() []store.Lease {
	out := make([]store.Lease, 0, len(a.leases))
	for _, l := range a.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].IP.Compare(out[j].IP); c != 0 {
			return c < 0
		}
		return out[i].MAC < out[j].MAC
	})
	return out
}

// PoolStatus says how full a network's address pool is.
type PoolStatus struct {
	// Network name.
	Network string `json:"network"`
	// Size is how many addresses the pool can hand out to guests without a
	// reservation: the range minus the server, the router and reserved
	// addresses that fall inside it.
	Size int `json:"size"`
	// Used is how many of those are leased (unexpired), offered or
	// declined right now.
	Used int `json:"used"`
	// Free is Size - Used. Addresses with expired leases count as free:
	// they are reclaimed when nothing else is left.
	Free int `json:"free"`
	// Reserved is the number of reservations (they are always available to
	// their guest, inside the range or not).
	Reserved int `json:"reserved"`
}

func (a *allocator) status(now time.Time) PoolStatus {
	st := PoolStatus{Network: a.cfg.Network, Reserved: len(a.reserved)}
	offered := map[netip.Addr]bool{}
	for _, o := range a.offers {
		if now.Before(o.until) {
			offered[o.ip] = true
		}
	}
	for ip := a.cfg.RangeStart; ip.IsValid() && !a.cfg.RangeEnd.Less(ip); ip = ip.Next() {
		if !a.inPool(ip) {
			continue
		}
		st.Size++
		m, held := a.holder[ip]
		switch {
		case held && !a.leases[m].Expired(now), offered[ip], now.Before(a.declined[ip]):
			st.Used++
		}
	}
	st.Free = st.Size - st.Used
	return st
}
