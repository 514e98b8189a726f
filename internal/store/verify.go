package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt is returned (wrapped) when the state database cannot be
// trusted: truncated, overwritten, or found inconsistent while reading.
var ErrCorrupt = errors.New("the state database is damaged")

// ErrEmptyFile is returned (wrapped) by Open for a state database of 0
// bytes: bbolt would take it for a new database, and the daemon would
// then converge towards an empty desired state.
var ErrEmptyFile = errors.New("the state database is an empty file (0 bytes): its contents were lost")

// IsCorrupt reports whether err says the database is damaged or emptied.
func IsCorrupt(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrEmptyFile)
}

// What to do about a damaged store; every such error ends with it.
const corruptHelp = "run kvmnet store check to see what is damaged and which backup is good, then kvmnet store restore (with the daemon stopped)"

// bbolt's on-disk meta page, as go.etcd.io/bbolt/internal/common lays it
// out: a 16-byte page header, then magic, version, page size, flags, the
// root bucket (root page, sequence), the freelist page, the high water
// mark (pages in use), the transaction id, and an FNV-64a checksum of
// everything before it. Pages 0 and 1 hold one each.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16
	metaChecksumSpan = 56 // bytes the checksum covers
	metaSize         = metaChecksumSpan + 8
)

type boltMeta struct {
	pageSize uint32
	hwm      uint64 // pages in use: the file must hold them all
	txid     uint64
}

// readMeta decodes and checks the meta of the page at off.
func readMeta(f *os.File, off int64) (boltMeta, error) {
	b := make([]byte, metaSize)
	if _, err := f.ReadAt(b, off+pageHeaderSize); err != nil {
		return boltMeta{}, fmt.Errorf("reading the meta page at %d: %w", off, err)
	}
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(b[:metaChecksumSpan])
	switch {
	case le.Uint32(b[0:]) != boltMagic:
		return boltMeta{}, fmt.Errorf("the meta page at %d is not a bbolt meta page", off)
	case le.Uint32(b[4:]) != boltVersion:
		return boltMeta{}, fmt.Errorf("the meta page at %d has format version %d, want %d", off, le.Uint32(b[4:]), boltVersion)
	case le.Uint64(b[metaChecksumSpan:]) != h.Sum64():
		return boltMeta{}, fmt.Errorf("the meta page at %d fails its checksum", off)
	}
	return boltMeta{pageSize: le.Uint32(b[8:]), hwm: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, nil
}

// preflight checks the file at path before bbolt maps it: bbolt trusts the
// meta page and maps as many pages as it names, so a truncated file makes
// the first read past its end a SIGBUS, which no recover catches. It
// returns nil for a file that does not exist yet.
func preflight(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking state database %q: %w", path, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("state database %q is a symbolic link; kvmnet opens the files of its state dir only as themselves (move the real file there, or remove the link)", path)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("state database %q is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() == 0 {
		return fmt.Errorf("opening %q: %w; %s", path, ErrEmptyFile, corruptHelp)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("checking state database %q: %w", path, err)
	}
	defer f.Close()
	m0, err0 := readMeta(f, 0)
	pageSize := int64(m0.pageSize)
	if err0 != nil {
		pageSize = int64(os.Getpagesize())
	}
	m1, err1 := readMeta(f, pageSize)
	if err0 != nil && err1 != nil {
		if errors.Is(err0, io.EOF) || errors.Is(err0, io.ErrUnexpectedEOF) {
			err0 = fmt.Errorf("the file is %d bytes, too short for a database", fi.Size())
		}
		return fmt.Errorf("opening %q: %w: %w; %s", path, ErrCorrupt, err0, corruptHelp)
	}
	// bbolt uses the valid meta with the higher transaction id.
	m := m0
	if err0 != nil || (err1 == nil && m1.txid > m0.txid) {
		m = m1
	}
	if need := int64(m.hwm) * int64(m.pageSize); need > fi.Size() {
		return fmt.Errorf("opening %q: %w: it is truncated: its pages need %d bytes and the file has %d; %s", path, ErrCorrupt, need, fi.Size(), corruptHelp)
	}
	return nil
}

// guard turns a panic or a memory fault inside bbolt (a page of random
// bytes, a freelist that points nowhere) into ErrCorrupt: a damaged store
// must end in a message, not a stack trace. Use it as
//
//	defer s.guard(&err)()
//
// It marks the store broken, so later calls fail at once instead of
// reading the damage again.
func (s *Store) guard(err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if s != nil {
				s.broken.Store(true)
			}
			*err = fmt.Errorf("%w (%v); %s", ErrCorrupt, r, corruptHelp)
		}
	}
}

// view is db.View, guarded.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	if s.broken.Load() {
		return fmt.Errorf("%w; %s", ErrCorrupt, corruptHelp)
	}
	defer s.guard(&err)()
	return s.db.View(fn)
}

// update is db.Update, guarded.
func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	if s.broken.Load() {
		return fmt.Errorf("%w; %s", ErrCorrupt, corruptHelp)
	}
	defer s.guard(&err)()
	return s.db.Update(fn)
}

// Verify reads the whole database: every branch and leaf page reachable
// from the root, with every key and value of every bucket, on this
// goroutine, so that a fault on a damaged page is recovered (bbolt's own
// tx.Check runs on a goroutine of its own, where a page id past the end
// of the map is a fatal SIGSEGV). It returns ErrCorrupt, wrapped with
// what was found, when something is wrong.
func (s *Store) Verify() error {
	err := s.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk(b)
		})
	})
	if err != nil && !IsCorrupt(err) {
		err = fmt.Errorf("%w: %w; %s", ErrCorrupt, err, corruptHelp)
	}
	return err
}

// walk reads every key and value under b: ForEach hands each one over,
// which is the read that faults on a damaged page.
func walk(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return walk(sub)
			}
		}
		return nil
	})
}

// Report is what kvmnet store check prints: the database's health and
// that of each backup.
type Report struct {
	Database string `json:"database"`
	// Missing is set when the database does not exist (yet).
	Missing bool `json:"missing,omitempty"`
	// Problem is why the database cannot be used; "" when it can.
	Problem string `json:"problem,omitempty"`
	// Revision is the newest desired revision (0 for none), Revisions how
	// many are kept, Originals how many originals are recorded.
	Revision  uint64 `json:"revision"`
	Revisions int    `json:"revisions"`
	Originals int    `json:"originals"`
	// BackupProblem is why the last backup could not be written, if it
	// could not.
	BackupProblem string         `json:"backupProblem,omitempty"`
	Backups       []BackupReport `json:"backups"`
}

// BackupReport is one backup file's state.
type BackupReport struct {
	File string `json:"file"`
	// Problem is why it cannot be used ("" when it can; "missing" when
	// it was never written).
	Problem   string    `json:"problem,omitempty"`
	Revision  uint64    `json:"revision,omitempty"`
	Time      time.Time `json:"time,omitzero"`
	Originals int       `json:"originals,omitempty"`
}

// OK reports whether the database can be used.
func (r *Report) OK() bool { return r.Problem == "" }

// Inspect checks the database at path and its backups. s is the store
// when the caller has it open (the daemon); nil opens it here.
func Inspect(path string, s *Store) *Report {
	r := &Report{Database: path}
	if _, err := os.Lstat(path); s == nil && errors.Is(err, os.ErrNotExist) {
		r.Missing = true
	} else if s == nil {
		var err error
		if s, err = Open(path); err != nil {
			r.Problem = err.Error()
		} else {
			defer s.Close()
		}
	}
	if r.Problem == "" && !r.Missing {
		if err := s.Verify(); err != nil {
			r.Problem = err.Error()
		}
	}
	if r.Problem == "" && !r.Missing {
		revs, err1 := s.Revisions()
		orig, err2 := s.Originals()
		if err := errors.Join(err1, err2); err != nil {
			r.Problem = err.Error()
		}
		r.Revisions, r.Originals = len(revs), len(orig)
		if len(revs) > 0 {
			r.Revision = revs[len(revs)-1].Rev
		}
		if err := s.BackupErr(); err != nil {
			r.BackupProblem = err.Error()
		}
	}
	for _, file := range BackupPaths(path) {
		br := BackupReport{File: file}
		b, err := ReadBackup(file)
		switch {
		case errors.Is(err, os.ErrNotExist):
			br.Problem = "missing"
		case err != nil:
			br.Problem = err.Error()
		default:
			br.Revision, br.Time, br.Originals = b.Revision, b.Time, len(b.Originals)
		}
		r.Backups = append(r.Backups, br)
	}
	return r
}
