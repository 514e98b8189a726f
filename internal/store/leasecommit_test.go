package store

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestQueueLeasesGroups holds the database's writer lock while leases are
// queued: the first group is then stuck in its transaction, and every
// lease queued meanwhile must join the one commit after it.
func TestQueueLeasesGroups(t *testing.T) {
	s, path := openTemp(t)
	if err := s.PutLease(Lease{Network: "dev", MAC: "52:54:00:00:01:ff", IP: netip.MustParseAddr("10.0.1.255"), Expiry: time.Unix(1e9, 0)}); err != nil {
		t.Fatal(err)
	}
	block, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	var commits []*LeaseCommit
	for i := range n {
		l := Lease{Network: "dev", MAC: fmt.Sprintf("52:54:00:00:00:%02x", i), IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), Expiry: time.Unix(2e9, 0).UTC()}
		commits = append(commits, s.QueueLeases(LeaseOp{Lease: l}))
	}
	// A delete queued after the puts lands after them.
	commits = append(commits, s.QueueLeases(LeaseOp{Lease: Lease{Network: "dev", MAC: "52:54:00:00:00:00"}, Delete: true},
		LeaseOp{Lease: Lease{Network: "dev", MAC: "52:54:00:00:01:ff"}, Delete: true}))
	if err := block.Rollback(); err != nil {
		t.Fatal(err)
	}
	for _, c := range commits {
		if err := c.Wait(); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	s.leaseQ.mu.Lock()
	got := s.leaseQ.commits
	s.leaseQ.mu.Unlock()
	if got > 2 {
		t.Errorf("%d leases queued behind one transaction took %d commits, want at most 2", n+2, got)
	}
	s.Close()
	// What Wait said is on disk is there after a reopen.
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ls, err := s2.Leases("dev")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != n-1 || ls[0].MAC != "52:54:00:00:00:01" || ls[n-2].IP != netip.MustParseAddr("10.0.0.99") {
		t.Errorf("after reopen: %d leases, first %+v; want %d, from 52:54:00:00:00:01", len(ls), ls[0], n-1)
	}
}

func TestQueueLeasesInvalid(t *testing.T) {
	s, _ := openTemp(t)
	good := Lease{Network: "dev", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.0.0.1")}
	bad := Lease{Network: "dev", MAC: "52:54:00:00:00:02", IP: netip.MustParseAddr("fd00::1")}
	if err := s.QueueLeases(LeaseOp{Lease: good}, LeaseOp{Lease: bad}).Wait(); err == nil {
		t.Fatal("queueing an IPv6 lease succeeded")
	}
	if err := s.QueueLeases(LeaseOp{Lease: Lease{Network: "dev", MAC: "nope"}, Delete: true}).Wait(); err == nil {
		t.Fatal("queueing the delete of a bad MAC succeeded")
	}
	// Nothing of a refused call is written, not even its valid part.
	if err := s.QueueLeases().Wait(); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.Leases(""); len(ls) != 0 {
		t.Errorf("leases after refused calls: %+v", ls)
	}
}
