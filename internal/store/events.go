package store

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Event is one entry of the event log: something kvmnet did or noticed.
type Event struct {
	// Seq numbers events from 1 up, in the order they were added; AddEvent
	// assigns it.
	Seq uint64 `json:"seq"`
	// Time of the event; AddEvent fills it in when zero.
	Time time.Time `json:"time"`
	// Kind classifies the event, e.g. "apply", "lease", "drift".
	Kind string `json:"kind"`
	// Network it concerns, if any.
	Network string `json:"network,omitempty"`
	// Object it concerns, if any, e.g. a VM or an interface name.
	Object string `json:"object,omitempty"`
	// Message says what happened, for people.
	Message string `json:"message"`
}

// AddEvent appends ev to the event log, assigning its Seq (any value the
// caller set is ignored). The log keeps the newest MaxEvents events.
func (s *Store) AddEvent(ev Event) error {
	err := s.update(func(tx *bolt.Tx) error { return s.putEvent(tx, &ev) })
	if err != nil {
		return fmt.Errorf("adding %q event: %w", ev.Kind, err)
	}
	return nil
}

// Events returns the kept events with Seq greater than since, oldest first.
// Events(0) returns the whole log; pass the last Seq seen to follow it.
func (s *Store) Events(since uint64) ([]Event, error) {
	if since == math.MaxUint64 {
		return nil, nil
	}
	var out []Event
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(u64(since + 1)); k != nil; k, v = c.Next() {
			var ev Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("decoding event %d: %w", fromU64(k), err)
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading events: %w", err)
	}
	return out, nil
}

func (s *Store) putEvent(tx *bolt.Tx, ev *Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	b := tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	ev.Seq = seq
	v, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := b.Put(u64(seq), v); err != nil {
		return err
	}
	return trimOldest(b, seq, s.maxEvents)
}
