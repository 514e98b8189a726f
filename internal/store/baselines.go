package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketBaselines holds `kvmnet baseline save` snapshots: name -> JSON
// (package baseline). Like leases and events, they are not in backups.
var bucketBaselines = []byte("baselines")

// SaveBaseline stores data as baseline name, replacing one of that name.
func (s *Store) SaveBaseline(name string, data []byte) error {
	err := s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketBaselines)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), data)
	})
	if err != nil {
		return fmt.Errorf("saving baseline %q: %w", name, err)
	}
	return nil
}

// Baseline returns baseline name; an error that IsNotFound when there is
// none.
func (s *Store) Baseline(name string) ([]byte, error) {
	var data []byte
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketBaselines); b != nil {
			if v := b.Get([]byte(name)); v != nil {
				data = append([]byte(nil), v...)
				return nil
			}
		}
		return ErrNotFound
	})
	if err != nil {
		return nil, fmt.Errorf("reading baseline %q: %w", name, err)
	}
	return data, nil
}

// Baselines returns the names of the saved baselines, sorted.
func (s *Store) Baselines() ([]string, error) {
	var names []string
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBaselines)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing baselines: %w", err)
	}
	return names, nil
}
