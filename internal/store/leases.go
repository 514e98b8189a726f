package store

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Lease is one DHCP lease of a NAT network, as the DHCP server granted it.
type Lease struct {
	// Network is the name of the NAT network.
	Network string `json:"network"`
	// MAC of the guest, in net.HardwareAddr.String() form
	// (lowercase, colon separated). One lease per MAC and network.
	MAC string `json:"mac"`
	// Hostname is the reservation's hostname or the one the guest sent.
	Hostname string `json:"hostname,omitempty"`
	// IP handed out.
	IP netip.Addr `json:"ip"`
	// Expiry is when the lease runs out unless renewed. An expired lease is
	// kept so the guest gets the same address back while nobody else needs it.
	Expiry time.Time `json:"expiry"`
}

// Expired reports whether the lease has run out at time now.
func (l Lease) Expired(now time.Time) bool { return !now.Before(l.Expiry) }

// normalMAC returns mac in the form net.HardwareAddr.String() produces, so
// "52:54:00:AA:00:01" and "52-54-00-aa-00-01" name the same lease.
func normalMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("invalid MAC address %q: %w", mac, err)
	}
	return hw.String(), nil
}

// PutLease creates or replaces the lease of l.MAC on l.Network.
func (s *Store) PutLease(l Lease) error {
	mac, v, err := encodeLease(l)
	if err != nil {
		return err
	}
	err = s.update(func(tx *bolt.Tx) error { return putLease(tx, l.Network, mac, v) })
	if err != nil {
		return fmt.Errorf("storing lease of %q on network %q: %w", mac, l.Network, err)
	}
	return nil
}

// encodeLease checks l and returns its key (the MAC in normal form) and
// its record.
func encodeLease(l Lease) (string, []byte, error) {
	if l.Network == "" {
		return "", nil, fmt.Errorf("storing lease of %q: network name is empty", l.MAC)
	}
	mac, err := normalMAC(l.MAC)
	if err != nil {
		return "", nil, fmt.Errorf("storing lease on network %q: %w", l.Network, err)
	}
	if !l.IP.Is4() {
		return "", nil, fmt.Errorf("storing lease of %q on network %q: IP %q is not an IPv4 address", l.MAC, l.Network, l.IP)
	}
	l.MAC = mac
	v, err := json.Marshal(l)
	if err != nil {
		return "", nil, fmt.Errorf("encoding lease of %q on network %q: %w", mac, l.Network, err)
	}
	return mac, v, nil
}

// putLease stores v as the lease of key (a normal MAC) on network in tx.
func putLease(tx *bolt.Tx, network, key string, v []byte) error {
	b, err := tx.Bucket(bucketLeases).CreateBucketIfNotExists([]byte(network))
	if err != nil {
		return err
	}
	return b.Put([]byte(key), v)
}

// DeleteLease removes the lease of mac on network. Deleting a lease that does
// not exist is not an error.
func (s *Store) DeleteLease(network, mac string) error {
	key, err := normalMAC(mac)
	if err != nil {
		return fmt.Errorf("deleting lease on network %q: %w", network, err)
	}
	err = s.update(func(tx *bolt.Tx) error { return deleteLease(tx, network, key) })
	if err != nil {
		return fmt.Errorf("deleting lease of %q on network %q: %w", mac, network, err)
	}
	return nil
}

// deleteLease removes the lease of key (a normal MAC) on network in tx.
func deleteLease(tx *bolt.Tx, network, key string) error {
	b := tx.Bucket(bucketLeases).Bucket([]byte(network))
	if b == nil {
		return nil
	}
	if err := b.Delete([]byte(key)); err != nil {
		return err
	}
	// Drop the bucket of a network with no leases left, so destroyed
	// networks do not linger in the file.
	if k, _ := b.Cursor().First(); k == nil {
		return tx.Bucket(bucketLeases).DeleteBucket([]byte(network))
	}
	return nil
}

// Leases returns the leases of network, or of every network when network is
// "", sorted by IP (then network, then MAC). Expired leases are included.
func (s *Store) Leases(network string) ([]Lease, error) {
	var out []Lease
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketLeases)
		readNet := func(name []byte) error {
			b := root.Bucket(name)
			if b == nil {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				var l Lease
				if err := json.Unmarshal(v, &l); err != nil {
					return fmt.Errorf("decoding lease %q of network %q: %w", k, name, err)
				}
				out = append(out, l)
				return nil
			})
		}
		if network != "" {
			return readNet([]byte(network))
		}
		return root.ForEachBucket(readNet)
	})
	if err != nil {
		if network == "" {
			return nil, fmt.Errorf("reading leases: %w", err)
		}
		return nil, fmt.Errorf("reading leases of network %q: %w", network, err)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if c := a.IP.Compare(b.IP); c != 0 {
			return c < 0
		}
		if a.Network != b.Network {
			return a.Network < b.Network
		}
		return a.MAC < b.MAC
	})
	return out, nil
}
