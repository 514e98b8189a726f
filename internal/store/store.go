// Package store keeps kvmnet's state in one embedded bbolt database under the
// state dir: revisions of the desired state, the original values of things
// kvmnet changed (to put back on destroy), DHCP leases and an event log.
//
// bbolt takes an exclusive lock on the file, so only one process (normally
// `kvmnet daemon`) has the store open at a time; everyone else goes through
// the daemon's socket. A Store is safe for concurrent use by goroutines.
package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// File is the name of the database file inside the state dir.
const File = "state.db"

const (
	// openTimeout bounds the wait for the file lock. A second process
	// should fail fast with a helpful message rather than hang.
	openTimeout = time.Second

	// MaxRevisions is how many desired-state revisions are kept; older ones
	// are deleted when a new one is saved.
	MaxRevisions = 50
	// MaxEvents is how many events the log keeps; the oldest are deleted
	// when it grows past this.
	MaxEvents = 10000
)

// Bucket names. They are part of the on-disk format: never rename them.
var (
	bucketRevisions = []byte("revisions") // rev -> revisionMeta (JSON)
	bucketDocuments = []byte("documents") // rev -> desired document
	bucketOriginals = []byte("originals") // key -> original value
	bucketLeases    = []byte("leases")    // network -> (mac -> Lease JSON)
	bucketEvents    = []byte("events")    // seq -> Event (JSON)
	bucketPending   = []byte("pending")   // "apply" -> Pending (JSON)
)

// ErrLocked is returned (wrapped) by Open when another process holds the
// database.
var ErrLocked = errors.New(`it is locked by another process (is "kvmnet daemon" running? stop it or use it through its socket)`)

// ErrNotFound is returned (wrapped) when a requested revision does not exist.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err means the requested item does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Store is an open state database.
type Store struct {
	db   *bolt.DB
	path string

	// maxRevisions and maxEvents are MaxRevisions and MaxEvents; tests
	// lower them.
	maxRevisions, maxEvents int

	// broken is set once a read met damage (see guard).
	broken atomic.Bool

	// BackupInBackground writes backups on a goroutine of their own, the
	// newest state only when changes come faster than backups: a daemon
	// serving edits does not wait for the backup's fsync (13 ms for a 480
	// KB file here, BenchmarkSaveDesired). Close waits for it. Set it
	// before the store is used.
	BackupInBackground bool

	// backupErr is the error of the last backup written, nil when it
	// worked (see BackupErr); backupPending that a change waits for its
	// backup, backupRunning that a goroutine writes them.
	backupMu      sync.Mutex
	backupErr     error
	backupPending bool
	backupRunning bool
	backupDone    sync.WaitGroup

	// leaseQ holds lease changes waiting for their group commit (see
	// QueueLeases).
	leaseQ leaseQueue
}

// BackupErr returns why the last backup could not be written, or nil. A
// failed backup does not fail the change that wanted it (the database
// holds it), but the caller should say so: the next loss of the database
// would lose it.
func (s *Store) BackupErr() error {
	s.backupMu.Lock()
	defer s.backupMu.Unlock()
	return s.backupErr
}

// keepBackup writes a backup, now or in the background, and remembers
// how it went.
func (s *Store) keepBackup() {
	if !s.BackupInBackground {
		err := s.backup()
		s.backupMu.Lock()
		s.backupErr = err
		s.backupMu.Unlock()
		return
	}
	s.backupMu.Lock()
	defer s.backupMu.Unlock()
	s.backupPending = true
	if s.backupRunning {
		return // the running goroutine takes it
	}
	s.backupRunning = true
	s.backupDone.Add(1)
	go func() {
		defer s.backupDone.Done()
		for {
			s.backupMu.Lock()
			if !s.backupPending {
				s.backupRunning = false
				s.backupMu.Unlock()
				return
			}
			s.backupPending = false
			s.backupMu.Unlock()
			err := s.backup()
			s.backupMu.Lock()
			s.backupErr = err
			s.backupMu.Unlock()
		}
	}()
}

// OpenNoFollow opens like os.OpenFile but never through a symbolic link
// (O_NOFOLLOW), and says so when it meets one:
// a link planted in the state dir would have kvmnet write its database
// wherever the link points.
func OpenNoFollow(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag|syscall.O_NOFOLLOW, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%q is a symbolic link; kvmnet opens the files of its state dir only as themselves (remove the link)", name)
	}
	return f, err
}

// Open opens (creating it and its parent directories, mode 0700, if needed)
// the state database at path. It fails after about a second with ErrLocked
// when another process has it open.
func Open(path string) (*Store, error) {
	return open(path, openTimeout)
}

func open(path string, timeout time.Duration) (s *Store, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir for %q: %w", path, err)
	}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		if err := create(path, timeout); err != nil {
			return nil, err
		}
	}
	if err := preflight(path); err != nil {
		return nil, err
	}
	// bbolt panics on some damage it meets while opening (a freelist
	// page that is not one).
	defer (*Store)(nil).guard(&err)()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, OpenFile: OpenNoFollow})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening state database %q: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state database %q: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRevisions, bucketDocuments, bucketOriginals, bucketLeases, bucketEvents, bucketPending} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("creating bucket %q: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising state database %q: %w", path, err)
	}
	return &Store{db: db, path: path, maxRevisions: MaxRevisions, maxEvents: MaxEvents}, nil
}

// create makes a new database at path atomically: initialised under a
// name of its own, then linked into place. bbolt would create path empty
// and write its first pages after taking the lock, and another process
// finding a 0-byte state.db in between could not tell it from one that
// lost its contents (ErrEmptyFile). When another process creates path
// first, its database is used.
func create(path string, timeout time.Duration) error {
	var r [4]byte
	rand.Read(r[:])
	tmp := fmt.Sprintf("%s.new-%d-%x", path, os.Getpid(), r)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: timeout, OpenFile: OpenNoFollow})
	if err != nil {
		return fmt.Errorf("creating state database %q: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := db.Close(); err != nil {
		return fmt.Errorf("creating state database %q: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating state database %q: %w", path, err)
	}
	return nil
}

// Path is the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close releases the database and its lock.
func (s *Store) Close() error {
	s.leaseQ.idle.Wait()
	s.backupDone.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing state database %q: %w", s.path, err)
	}
	return nil
}

// u64 encodes n as a big-endian key, so bbolt's byte order is numeric order.
func u64(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

func fromU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// trimOldest deletes the keys of b that are more than keep sequence numbers
// older than newest. Keys are sequence numbers, never reused, so this keeps
// the newest keep entries without counting the bucket (which walks every page).
func trimOldest(b *bolt.Bucket, newest uint64, keep int) error {
	if newest <= uint64(keep) {
		return nil
	}
	limit := newest - uint64(keep)
	c := b.Cursor()
	for k, _ := c.First(); k != nil && fromU64(k) <= limit; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Revision describes one saved version of the desired state.
type Revision struct {
	// Rev numbers revisions from 1 up; numbers are never reused, even after
	// old revisions are dropped.
	Rev uint64 `json:"rev"`
	// Time the revision was saved.
	Time time.Time `json:"time"`
	// Note says where it came from, e.g. "apply -f host.yaml".
	Note string `json:"note"`
	// Size of the document in bytes.
	Size int `json:"size"`
}

type revisionMeta struct {
	Time time.Time `json:"time"`
	Note string    `json:"note"`
	Size int       `json:"size"`
}

// SaveDesired stores doc as the newest desired state and returns its revision
// number. Only the newest MaxRevisions revisions are kept.
func (s *Store) SaveDesired(doc []byte, note string) (uint64, error) {
	return s.SaveDesiredWith(doc, note, With{})
}

// With is what SaveDesiredWith stores along with a new revision.
type With struct {
	// Parsed, when Stamp is set, is kept as the parsed form of the new
	// revision, as SaveParsed keeps it.
	Stamp  string
	Parsed []byte
	// Event, when set, makes the event added to the log for the new
	// revision (see AddEvent).
	Event func(rev uint64) *Event
}

// SaveDesiredWith is SaveDesired, storing with the new revision what w
// holds, all in one transaction: each transaction waits for the disk.
func (s *Store) SaveDesiredWith(doc []byte, note string, w With) (uint64, error) {
	var rev uint64
	err := s.update(func(tx *bolt.Tx) error {
		meta, docs := tx.Bucket(bucketRevisions), tx.Bucket(bucketDocuments)
		var err error
		if rev, err = meta.NextSequence(); err != nil {
			return err
		}
		m, err := json.Marshal(revisionMeta{Time: time.Now().UTC(), Note: note, Size: len(doc)})
		if err != nil {
			return err
		}
		if err := meta.Put(u64(rev), m); err != nil {
			return err
		}
		// bbolt keeps a reference to the value until the transaction
		// commits; copy so the caller may reuse doc.
		if err := docs.Put(u64(rev), append([]byte(nil), doc...)); err != nil {
			return err
		}
		if err := trimOldest(meta, rev, s.maxRevisions); err != nil {
			return err
		}
		if err := trimOldest(docs, rev, s.maxRevisions); err != nil {
			return err
		}
		if w.Stamp != "" {
			if err := putParsed(tx, rev, w.Stamp, w.Parsed); err != nil {
				return err
			}
		}
		if w.Event != nil {
			if ev := w.Event(rev); ev != nil {
				return s.putEvent(tx, ev)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("saving desired state: %w", err)
	}
	s.keepBackup()
	return rev, nil
}

// Desired returns the newest desired state and its revision, or a nil doc and
// revision 0 when none was saved yet.
func (s *Store) Desired() (doc []byte, rev uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketDocuments).Cursor().Last()
		if k == nil {
			return nil
		}
		rev = fromU64(k)
		// Values are only valid inside the transaction.
		doc = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("reading desired state: %w", err)
	}
	return doc, rev, nil
}

// Revisions lists the kept revisions, oldest first.
func (s *Store) Revisions() ([]Revision, error) {
	var revs []Revision
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevisions).ForEach(func(k, v []byte) error {
			var m revisionMeta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decoding revision %d: %w", fromU64(k), err)
			}
			revs = append(revs, Revision{Rev: fromU64(k), Time: m.Time, Note: m.Note, Size: m.Size})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing revisions: %w", err)
	}
	return revs, nil
}

// Revision returns the document of revision rev, or an error satisfying
// IsNotFound when it was never saved or has been dropped.
func (s *Store) Revision(rev uint64) ([]byte, error) {
	var doc []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDocuments).Get(u64(rev))
		if v == nil {
			return ErrNotFound
		}
		doc = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading revision %d: %w", rev, err)
	}
	return doc, nil
}

// SetOriginal records value as the original of key (for instance a sysctl
// kvmnet is about to change), unless key already has one: the first recorded
// value is the one from before kvmnet touched anything, and a later apply must
// not overwrite it with kvmnet's own setting.
func (s *Store) SetOriginal(key, value string) error {
	changed := false
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOriginals)
		if b.Get([]byte(key)) != nil {
			return nil
		}
		changed = true
		return b.Put([]byte(key), []byte(value))
	})
	if err != nil {
		return fmt.Errorf("recording original of %q: %w", key, err)
	}
	if changed {
		s.keepBackup()
	}
	return nil
}

// Originals returns every recorded original value by key.
func (s *Store) Originals() (map[string]string, error) {
	out := map[string]string{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOriginals).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading originals: %w", err)
	}
	return out, nil
}

// DeleteOriginal forgets the original of key, typically once it has been
// restored. Deleting a key that has none is not an error.
func (s *Store) DeleteOriginal(key string) error {
	changed := false
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOriginals)
		if b.Get([]byte(key)) == nil {
			return nil
		}
		changed = true
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("deleting original of %q: %w", key, err)
	}
	if changed {
		s.keepBackup()
	}
	return nil
}
