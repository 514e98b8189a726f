package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Pending is an apply that is rolled back unless it is confirmed in time
// (`kvmnet apply --confirm`). There is at most one.
type Pending struct {
	// ID names this pending apply; a timer expires only the apply it was
	// started for.
	ID string `json:"id"`
	// Revision is the revision the apply made; Previous the one in force
	// before it, which a rollback applies again (0: none, so a rollback
	// destroys).
	Revision uint64    `json:"revision"`
	Previous uint64    `json:"previous"`
	Source   string    `json:"source"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	// Probe says what the gateway probe after the apply found.
	Probe string `json:"probe"`
	// Timer is the PID of the process that rolls back at the deadline
	// (a helper started by the CLI), or 0 when the daemon does.
	Timer int `json:"timer,omitempty"`
}

var pendingKey = []byte("apply")

// SetPending records p, replacing any pending apply.
func (s *Store) SetPending(p Pending) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	err = s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPending).Put(pendingKey, b) })
	if err != nil {
		return fmt.Errorf("recording the pending apply: %w", err)
	}
	return nil
}

// Pending returns the pending apply, or nil when none waits.
func (s *Store) Pending() (*Pending, error) {
	var p *Pending
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPending).Get(pendingKey)
		if b == nil {
			return nil
		}
		p = &Pending{}
		return json.Unmarshal(b, p)
	})
	if err != nil {
		return nil, fmt.Errorf("reading the pending apply: %w", err)
	}
	return p, nil
}

// TakePending removes and returns the pending apply if its ID is id (any
// pending apply when id is ""); nil when there is none or another one.
// Confirming and expiring both take it, so only one of them wins.
func (s *Store) TakePending(id string) (*Pending, error) {
	var p *Pending
	err := s.update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPending)
		b := bk.Get(pendingKey)
		if b == nil {
			return nil
		}
		var cur Pending
		if err := json.Unmarshal(b, &cur); err != nil {
			return err
		}
		if id != "" && cur.ID != id {
			return nil
		}
		p = &cur
		return bk.Delete(pendingKey)
	})
	if err != nil {
		return nil, fmt.Errorf("taking the pending apply: %w", err)
	}
	return p, nil
}
