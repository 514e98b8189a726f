package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// filledStore makes a database with revisions, originals, leases and
// events, closes it and returns its path.
func filledStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), File)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		doc := fmt.Appendf(nil, "networks:\n  - {name: n%d, mode: nat, subnet: 10.%d.0.0/24}\n%s", i, i, bytes.Repeat([]byte("# padding\n"), 400))
		if _, err := s.SaveDesired(doc, fmt.Sprintf("apply %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetOriginal("net.ipv4.ip_forward", "0"); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		l := Lease{Network: "n1", MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256), IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), Expiry: time.Now().Add(time.Hour)}
		if err := s.PutLease(l); err != nil {
			t.Fatal(err)
		}
		if err := s.AddEvent(Event{Kind: "apply", Message: strings.Repeat("x", 100)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// use calls every reading method of s and returns their errors.
func use(s *Store) []error {
	_, _, e1 := s.Desired()
	_, e2 := s.Revisions()
	_, e3 := s.Originals()
	_, e4 := s.Leases("")
	_, e5 := s.Events(0)
	_, e6 := s.SaveDesired([]byte("networks: []\n"), "after")
	return []error{e1, e2, e3, e4, e5, e6, s.Verify()}
}

// TestEmptyFile checks that a database truncated to 0 bytes is reported
// as lost instead of opened as a new one (it once was, and the daemon then
// deleted every network).
func TestEmptyFile(t *testing.T) {
	path := filledStore(t)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if !errors.Is(err, ErrEmptyFile) || !IsCorrupt(err) || !strings.Contains(err.Error(), "kvmnet store restore") {
		t.Fatalf("Open of a 0-byte database: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("the 0-byte file was changed: %v, %v", fi, err)
	}
}

// TestTruncated checks that a database cut short is refused before it is
// mapped: bbolt read past the end and the process died of SIGBUS.
func TestTruncated(t *testing.T) {
	path := filledStore(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{20_000, 4096, 100, fi.Size() - 4096} {
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err == nil {
			s.Close()
			t.Errorf("Open of the database truncated to %d bytes worked", size)
			continue
		}
		if !IsCorrupt(err) {
			t.Errorf("Open of the database truncated to %d bytes: %v, want ErrCorrupt", size, err)
		}
		t.Logf("%d bytes: %v", size, err)
	}
}

// TestRandomPages overwrites pages of a database with random bytes (not
// the meta pages, whose checksums bbolt checks): opening and using it must
// end in errors that say the store is damaged, never in a panic or a
// fault, and the full check must find most of the damage.
func TestRandomPages(t *testing.T) {
	clean := filledStore(t)
	orig, err := os.ReadFile(clean)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	pages := len(orig) / page
	detected := 0
	const rounds = 30
	for seed := range uint64(rounds) {
		r := rand.New(rand.NewPCG(seed, 7))
		data := bytes.Clone(orig)
		for range 3 {
			p := 2 + r.IntN(pages-2)
			for i := p * page; i < (p+1)*page; i++ {
				data[i] = byte(r.Uint32())
			}
		}
		path := filepath.Join(t.TempDir(), File)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err != nil {
			if !IsCorrupt(err) {
				t.Errorf("seed %d: Open: %v, want ErrCorrupt", seed, err)
			}
			detected++
			continue
		}
		found := false
		for _, err := range use(s) {
			if err != nil {
				found = true
				// A value of random bytes may fail to decode
				// before anything faults: a clean error too.
				if !IsCorrupt(err) && !strings.Contains(err.Error(), "decoding") && !strings.Contains(err.Error(), "invalid") {
					t.Errorf("seed %d: %v, want ErrCorrupt", seed, err)
				}
			}
		}
		if found {
			detected++
		}
		s.Close()
	}
	// Random pages may land on free pages, which hold nothing.
	t.Logf("damage found in %d of %d databases", detected, rounds)
	if detected < rounds/2 {
		t.Errorf("damage found in only %d of %d databases", detected, rounds)
	}
}

// TestSymlinks checks that the database is not opened through a link: a
// link planted in the state dir once had kvmnet create its database
// wherever it pointed.
func TestSymlinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "elsewhere.db")
	path := filepath.Join(dir, File)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Open through a dangling link: %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
	// A link to an existing database is refused too.
	real := filledStore(t)
	os.Remove(path)
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Open through a link: %v", err)
	}
}

// TestBackups checks that every change of the desired state or the
// originals leaves a verified backup, that the older ones rotate, that a
// damaged backup is passed over, and that Restore rebuilds a database
// from one.
func TestBackups(t *testing.T) {
	s, path := openTemp(t)
	for i := range 4 {
		if _, err := s.SaveDesired(fmt.Appendf(nil, "doc %d\n", i), fmt.Sprintf("apply %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetOriginal("net.ipv4.ip_forward", "0"); err != nil {
		t.Fatal(err)
	}
	if err := s.BackupErr(); err != nil {
		t.Fatal(err)
	}
	b, file, err := NewestBackup(path)
	if err != nil {
		t.Fatal(err)
	}
	if file != BackupPaths(path)[0] || b.Revision != 4 || string(b.Doc) != "doc 3\n" || b.Note != "apply 3" || b.Originals["net.ipv4.ip_forward"] != "0" {
		t.Errorf("newest backup %s: %+v", file, b)
	}
	older, err := ReadBackup(BackupPaths(path)[1])
	if err != nil || older.Revision != 4 || len(older.Originals) != 0 {
		t.Errorf("second backup: %+v, %v", older, err)
	}
	oldest, err := ReadBackup(BackupPaths(path)[2])
	if err != nil || older.Revision != 4 || oldest.Revision != 3 {
		t.Errorf("third backup: %+v, %v", oldest, err)
	}
	if _, err := os.Stat(BackupPaths(path)[2] + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("more than %d backups kept", BackupsKept)
	}

	// Damage the newest: the next one is used, and the damage named.
	data, _ := os.ReadFile(BackupPaths(path)[0])
	data = bytes.Replace(data, []byte(`"0"`), []byte(`"1"`), 1)
	os.WriteFile(BackupPaths(path)[0], data, 0o600)
	if _, err := ReadBackup(BackupPaths(path)[0]); !IsCorrupt(err) {
		t.Errorf("ReadBackup of an edited backup: %v", err)
	}
	b, file, err = NewestBackup(path)
	if err != nil || file != BackupPaths(path)[1] || b.Revision != 4 {
		t.Errorf("NewestBackup past a damaged one: %s %+v %v", file, b, err)
	}

	// Restore into a new file keeps the revision number.
	b, _, _ = NewestBackup(path)
	b.Originals = map[string]string{"net.ipv4.ip_forward": "0"}
	restored := filepath.Join(t.TempDir(), File)
	if err := Restore(restored, b, "restored from test"); err != nil {
		t.Fatal(err)
	}
	r, err := Open(restored)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	doc, rev, err := r.Desired()
	if err != nil || rev != 4 || string(doc) != "doc 3\n" {
		t.Errorf("restored desired: rev %d %q %v", rev, doc, err)
	}
	if o, _ := r.Originals(); o["net.ipv4.ip_forward"] != "0" {
		t.Errorf("restored originals: %v", o)
	}
	if next, err := r.SaveDesired([]byte("doc 4\n"), "next"); err != nil || next != 5 {
		t.Errorf("the next revision after a restore: %d, %v", next, err)
	}
	if err := Restore(restored, b, "again"); err == nil {
		t.Error("Restore over an existing file worked")
	}
}

// BenchmarkSaveDesired measures saving a revision of a large host's file
// (480 KB, ten thousand forwards), which writes its backup too; the
// Backup sub-benchmark is the backup's share alone.
func BenchmarkSaveDesired(b *testing.B) {
	doc := bytes.Repeat([]byte("      - {port: 20000, to: \"web1:80\"}\n"), 480_000/38)
	s, err := Open(filepath.Join(b.TempDir(), File))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("SaveDesired", func(b *testing.B) {
		for range b.N {
			if _, err := s.SaveDesired(doc, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Backup", func(b *testing.B) {
		for range b.N {
			if err := s.backup(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBackupInBackground checks that backups written in the background
// end with the newest state, and that Close waits for them.
func TestBackupInBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.BackupInBackground = true
	for i := range 20 {
		if _, err := s.SaveDesired(fmt.Appendf(nil, "doc %d\n", i), "edit"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, _, err := NewestBackup(path)
	if err != nil || b.Revision != 20 || string(b.Doc) != "doc 19\n" {
		t.Errorf("newest backup after Close: %+v, %v", b, err)
	}
}

// TestConcurrentCreate opens a new database from many goroutines at once,
// as the daemon and a CLI starting together do: none may see the file
// half-made (a 0-byte file is a lost database, ErrEmptyFile).
func TestConcurrentCreate(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), File)
		errs := make(chan error, 8)
		for range 8 {
			go func() {
				s, err := open(path, 10*time.Second)
				if err == nil {
					err = s.Close()
				}
				errs <- err
			}()
		}
		for range 8 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if m, _ := filepath.Glob(path + ".new-*"); len(m) > 0 {
			t.Fatalf("round %d: left behind %v", round, m)
		}
	}
}
