package store

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// cmpAddr compares netip.Addr values, whose fields are unexported.
var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "sub", File)
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	_, path := openTemp(t)
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("state dir mode = %o, want 700", got)
	}
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("database mode = %o, want 600", got)
	}
}

func TestOpenLocked(t *testing.T) {
	_, path := openTemp(t)
	// flock locks belong to open file descriptions, so a second open in
	// the same process conflicts just as another process would.
	start := time.Now()
	s2, err := open(path, 100*time.Millisecond)
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded, want a lock error")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("error %v does not wrap ErrLocked", err)
	}
	want := fmt.Sprintf(`opening state database %q: it is locked by another process (is "kvmnet daemon" running? stop it or use it through its socket)`, path)
	if err.Error() != want {
		t.Errorf("error:\n got %s\nwant %s", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("locked Open took %v, want it to give up quickly", d)
	}
}

func TestOpenLockedDefaultTimeout(t *testing.T) {
	_, path := openTemp(t)
	start := time.Now()
	_, err := Open(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a locked database: got %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v, want about %v", d, openTimeout)
	}
}

func TestDesiredRevisions(t *testing.T) {
	s, _ := openTemp(t)

	doc, rev, err := s.Desired()
	if err != nil || doc != nil || rev != 0 {
		t.Fatalf("Desired on empty store = %q, %d, %v; want nil, 0, nil", doc, rev, err)
	}

	for i := 1; i <= MaxRevisions+5; i++ {
		buf := []byte(fmt.Sprintf("networks: [] # %d", i))
		rev, err := s.SaveDesired(buf, fmt.Sprintf("apply %d", i))
		if err != nil {
			t.Fatal(err)
		}
		if rev != uint64(i) {
			t.Fatalf("SaveDesired #%d returned rev %d", i, rev)
		}
		// The store must have copied the document.
		copy(buf, "XXXXXXXX")
	}

	doc, rev, err = s.Desired()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("networks: [] # %d", MaxRevisions+5); string(doc) != want || rev != MaxRevisions+5 {
		t.Errorf("Desired = %q, %d; want %q, %d", doc, rev, want, MaxRevisions+5)
	}

	revs, err := s.Revisions()
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != MaxRevisions {
		t.Fatalf("kept %d revisions, want %d", len(revs), MaxRevisions)
	}
	if revs[0].Rev != 6 || revs[len(revs)-1].Rev != MaxRevisions+5 {
		t.Errorf("kept revisions %d..%d, want 6..%d", revs[0].Rev, revs[len(revs)-1].Rev, MaxRevisions+5)
	}
	last := revs[len(revs)-1]
	if last.Note != fmt.Sprintf("apply %d", MaxRevisions+5) || last.Size != len(doc) || last.Time.IsZero() {
		t.Errorf("newest revision = %+v", last)
	}

	if _, err := s.Revision(5); !IsNotFound(err) {
		t.Errorf("Revision(5) of a dropped revision: got %v, want not found", err)
	}
	got, err := s.Revision(6)
	if err != nil || string(got) != "networks: [] # 6" {
		t.Errorf("Revision(6) = %q, %v", got, err)
	}
}

func TestOriginals(t *testing.T) {
	s, _ := openTemp(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetOriginal("sysctl:net.ipv4.ip_forward", "0"))
	// A second apply sees kvmnet's own value; it must not replace the
	// original.
	must(s.SetOriginal("sysctl:net.ipv4.ip_forward", "1"))
	must(s.SetOriginal("link:eth0:master", ""))
	got, err := s.Originals()
	must(err)
	want := map[string]string{"sysctl:net.ipv4.ip_forward": "0", "link:eth0:master": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Originals (-want +got):\n%s", diff)
	}
	must(s.DeleteOriginal("sysctl:net.ipv4.ip_forward"))
	must(s.DeleteOriginal("never-set"))
	// After deletion the next writer is first again.
	must(s.SetOriginal("sysctl:net.ipv4.ip_forward", "1"))
	got, err = s.Originals()
	must(err)
	want = map[string]string{"sysctl:net.ipv4.ip_forward": "1", "link:eth0:master": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Originals after delete (-want +got):\n%s", diff)
	}
}

func TestLeases(t *testing.T) {
	s, _ := openTemp(t)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	put := []Lease{
		{Network: "dev", MAC: "52:54:00:00:00:02", IP: netip.MustParseAddr("192.168.100.20"), Expiry: exp},
		{Network: "dev", MAC: "52:54:00:00:00:01", Hostname: "web1", IP: netip.MustParseAddr("192.168.100.3"), Expiry: exp},
		{Network: "test", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.0.0.5"), Expiry: exp},
		// Upper case and dashes are stored in canonical form and replace
		// the lease of the same MAC.
		{Network: "dev", MAC: "52-54-00-00-00-02", IP: netip.MustParseAddr("192.168.100.100"), Expiry: exp},
	}
	for _, l := range put {
		if err := s.PutLease(l); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Leases("dev")
	if err != nil {
		t.Fatal(err)
	}
	want := []Lease{
		{Network: "dev", MAC: "52:54:00:00:00:01", Hostname: "web1", IP: netip.MustParseAddr("192.168.100.3"), Expiry: exp},
		{Network: "dev", MAC: "52:54:00:00:00:02", IP: netip.MustParseAddr("192.168.100.100"), Expiry: exp},
	}
	if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
		t.Errorf("Leases(dev) (-want +got):\n%s", diff)
	}

	all, err := s.Leases("")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Network != "test" {
		t.Errorf("Leases(\"\") = %+v, want 3 leases, 10.0.0.5 first", all)
	}

	if err := s.DeleteLease("dev", "52:54:00:00:00:01"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLease("nonet", "52:54:00:00:00:01"); err != nil {
		t.Errorf("deleting from an unknown network: %v", err)
	}
	if err := s.DeleteLease("test", "52:54:00:00:00:01"); err != nil {
		t.Fatal(err)
	}
	all, err = s.Leases("")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].MAC != "52:54:00:00:00:02" {
		t.Errorf("after deletes: %+v", all)
	}

	for _, bad := range []Lease{
		{MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.0.0.1")},
		{Network: "dev", MAC: "nope", IP: netip.MustParseAddr("10.0.0.1")},
		{Network: "dev", MAC: "52:54:00:00:00:01"},
	} {
		if err := s.PutLease(bad); err == nil {
			t.Errorf("PutLease(%+v) succeeded, want an error", bad)
		}
	}
}

func TestEvents(t *testing.T) {
	s, _ := openTemp(t)
	if evs, err := s.Events(0); err != nil || len(evs) != 0 {
		t.Fatalf("Events on empty store = %v, %v", evs, err)
	}
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.AddEvent(Event{Seq: 99, Time: at, Kind: "apply", Message: "applied revision 1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(Event{Kind: "lease", Network: "dev", Object: "52:54:00:00:00:10", Message: "leased 192.168.100.10"}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Seq != 1 || evs[1].Seq != 2 {
		t.Fatalf("Events(0) = %+v", evs)
	}
	if !evs[0].Time.Equal(at) || evs[1].Time.IsZero() || evs[1].Network != "dev" {
		t.Errorf("Events(0) = %+v", evs)
	}
	evs, err = s.Events(1)
	if err != nil || len(evs) != 1 || evs[0].Kind != "lease" {
		t.Errorf("Events(1) = %+v, %v", evs, err)
	}
}

func TestEventsCapped(t *testing.T) {
	s, _ := openTemp(t)
	// The real cap works the same; 10,000 transactions would only make
	// the test slow.
	s.maxEvents = 100
	n := s.maxEvents + 20
	for i := 0; i < n; i++ {
		if err := s.AddEvent(Event{Kind: "test", Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Events(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != s.maxEvents {
		t.Fatalf("kept %d events, want %d", len(evs), s.maxEvents)
	}
	if evs[0].Seq != 21 || evs[len(evs)-1].Seq != uint64(n) {
		t.Errorf("kept seq %d..%d, want 21..%d", evs[0].Seq, evs[len(evs)-1].Seq, n)
	}
}

func TestReopenPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	lease := Lease{Network: "dev", MAC: "52:54:00:00:00:10", IP: netip.MustParseAddr("192.168.100.10"), Expiry: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	steps := []error{
		func() error { _, err := s.SaveDesired([]byte("v1"), "one"); return err }(),
		func() error { _, err := s.SaveDesired([]byte("v2"), "two"); return err }(),
		s.SetOriginal("k", "v"),
		s.PutLease(lease),
		s.AddEvent(Event{Kind: "apply", Message: "m"}),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s.Close()
	doc, rev, err := s.Desired()
	if err != nil || !bytes.Equal(doc, []byte("v2")) || rev != 2 {
		t.Errorf("Desired after reopen = %q, %d, %v", doc, rev, err)
	}
	// Revision numbers continue after a reopen.
	if rev, err := s.SaveDesired([]byte("v3"), "three"); err != nil || rev != 3 {
		t.Errorf("SaveDesired after reopen = %d, %v; want 3", rev, err)
	}
	if o, err := s.Originals(); err != nil || o["k"] != "v" {
		t.Errorf("Originals after reopen = %v, %v", o, err)
	}
	if ls, err := s.Leases("dev"); err != nil || len(ls) != 1 || ls[0] != lease {
		t.Errorf("Leases after reopen = %+v, %v", ls, err)
	}
	if evs, err := s.Events(0); err != nil || len(evs) != 1 {
		t.Errorf("Events after reopen = %+v, %v", evs, err)
	}
}
