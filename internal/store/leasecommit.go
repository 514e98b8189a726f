package store

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Group commit of leases. A DHCP server must not acknowledge a lease the
// disk does not hold, and each bbolt transaction waits for its fsync
// (a few milliseconds): one transaction per lease caps a server at a few
// hundred new leases a second whatever the CPU. So leases are written in
// groups: changes queued while a commit is in flight wait, together, for
// the next one, and each caller waits for the commit holding its change.
// Under load a commit carries every lease decided during the one before;
// alone, a lease costs one transaction as before.

// LeaseOp is one change to the stored leases: Lease is stored (created or
// replaced), or, with Delete set, the lease of Lease.MAC on Lease.Network
// is removed (only those two fields count then).
type LeaseOp struct {
	Lease  Lease
	Delete bool
}

// LeaseCommit is a group of lease changes on its way to disk.
type LeaseCommit struct {
	done chan struct{}
	err  error
}

// Wait blocks until the group is on disk (nil) or failed to be written,
// in which case none of its changes is.
func (c *LeaseCommit) Wait() error {
	<-c.done
	return c.err
}

// Done is closed once the group is on disk or failed (see Wait).
func (c *LeaseCommit) Done() <-chan struct{} { return c.done }

// DoneCommit is a LeaseCommit that has finished with err, for lease
// stores that write at once (tests) and for changes refused before they
// were queued.
func DoneCommit(err error) *LeaseCommit {
	c := &LeaseCommit{done: make(chan struct{}), err: err}
	close(c.done)
	return c
}

// leaseQueue is the changes waiting for the next commit.
type leaseQueue struct {
	mu      sync.Mutex
	ops     []encodedOp
	next    *LeaseCommit // the commit ops join
	running bool         // a goroutine commits
	commits uint64       // transactions written, for tests
	idle    sync.WaitGroup
}

type encodedOp struct {
	network, key string
	value        []byte // nil: delete
}

// QueueLeases queues ops to be written, in order and after every change
// queued before them, in one transaction with whatever else is queued by
// then, and returns at once. Wait on the result before telling anyone the
// change is made. An op that is not valid fails the call, and nothing of it
// is queued.
func (s *Store) QueueLeases(ops ...LeaseOp) *LeaseCommit {
	enc := make([]encodedOp, 0, len(ops))
	for _, op := range ops {
		if op.Delete {
			key, err := normalMAC(op.Lease.MAC)
			if err != nil {
				return DoneCommit(fmt.Errorf("deleting lease on network %q: %w", op.Lease.Network, err))
			}
			enc = append(enc, encodedOp{network: op.Lease.Network, key: key})
			continue
		}
		key, v, err := encodeLease(op.Lease)
		if err != nil {
			return DoneCommit(err)
		}
		enc = append(enc, encodedOp{network: op.Lease.Network, key: key, value: v})
	}
	q := &s.leaseQ
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.next == nil {
		q.next = &LeaseCommit{done: make(chan struct{})}
	}
	q.ops = append(q.ops, enc...)
	c := q.next
	if !q.running {
		q.running = true
		q.idle.Add(1)
		go s.commitLeases()
	}
	return c
}

// commitLeases writes the queued groups, one transaction each, until the
// queue is empty.
func (s *Store) commitLeases() {
	q := &s.leaseQ
	defer q.idle.Done()
	for {
		q.mu.Lock()
		ops, c := q.ops, q.next
		q.ops, q.next = nil, nil
		if len(ops) > 0 {
			q.commits++
		}
		if len(ops) == 0 {
			q.running = false
			q.mu.Unlock()
			if c != nil {
				close(c.done)
			}
			return
		}
		q.mu.Unlock()
		err := s.update(func(tx *bolt.Tx) error {
			for _, op := range ops {
				var err error
				if op.value == nil {
					err = deleteLease(tx, op.network, op.key)
				} else {
					err = putLease(tx, op.network, op.key, op.value)
				}
				if err != nil {
					return fmt.Errorf("lease of %q on network %q: %w", op.key, op.network, err)
				}
			}
			return nil
		})
		if err != nil {
			c.err = fmt.Errorf("storing %d lease changes: %w", len(ops), err)
		}
		close(c.done)
	}
}
