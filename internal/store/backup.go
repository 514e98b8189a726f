package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backups: the newest desired revision and the recorded originals (the
// sysctls and uplink configurations destroy gives back) are also kept
// outside the database, in BackupDir, as a checksummed JSON file written
// atomically (temporary file, fsync, rename) after every change to them.
// The last BackupsKept are kept (backup.json newest, then backup.json.1,
// ...). They are what kvmnet store restore rebuilds a lost or damaged
// database from. Leases, events and older revisions are not backed up:
// guests ask for their leases again, and the rest is history.
const (
	// BackupDir is the folder of the backups inside the state dir.
	BackupDir = "backup"
	// BackupFile is the newest backup's name.
	BackupFile = "backup.json"
	// BackupsKept is how many backups are kept.
	BackupsKept = 3
	// backupFormat is the version of the file's layout.
	backupFormat = 1
)

// Backup is the content of a backup file.
type Backup struct {
	Format int       `json:"format"`
	Time   time.Time `json:"time"`
	// Revision, Note and Doc are the newest desired state (Revision 0 and
	// no Doc when none was ever saved).
	Revision uint64 `json:"revision"`
	Note     string `json:"note"`
	Doc      []byte `json:"doc"`
	// Originals are the recorded original values by key.
	Originals map[string]string `json:"originals"`
	// SHA256 is the hex SHA-256 of the JSON of the backup with SHA256
	// empty: a backup that does not match was damaged after it was
	// written.
	SHA256 string `json:"sha256"`
}

// sum is the checksum of b without its own.
func (b Backup) sum() (string, error) {
	b.SHA256 = ""
	data, err := json.Marshal(b)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:]), nil
}

// backupDir is where the backups of the store at path live.
func backupDir(path string) string { return filepath.Join(filepath.Dir(path), BackupDir) }

// BackupPaths are the backup files of the store at path, newest first.
func BackupPaths(path string) []string {
	out := []string{filepath.Join(backupDir(path), BackupFile)}
	for i := 1; i < BackupsKept; i++ {
		out = append(out, filepath.Join(backupDir(path), BackupFile+"."+strconv.Itoa(i)))
	}
	return out
}

// snapshot reads what a backup holds.
func (s *Store) snapshot() (*Backup, error) {
	b := &Backup{Format: backupFormat, Time: time.Now().UTC(), Originals: map[string]string{}}
	err := s.view(func(tx *bolt.Tx) error {
		if k, v := tx.Bucket(bucketDocuments).Cursor().Last(); k != nil {
			b.Revision = fromU64(k)
			b.Doc = append([]byte(nil), v...)
			var m revisionMeta
			if meta := tx.Bucket(bucketRevisions).Get(k); meta != nil && json.Unmarshal(meta, &m) == nil {
				b.Note = m.Note
			}
		}
		return tx.Bucket(bucketOriginals).ForEach(func(k, v []byte) error {
			b.Originals[string(k)] = string(v)
			return nil
		})
	})
	return b, err
}

// backup writes a new backup of the store and rotates the older ones. A
// store whose backup cannot be written still works; the error says so.
func (s *Store) backup() error {
	b, err := s.snapshot()
	if err != nil {
		return err
	}
	if b.SHA256, err = b.sum(); err != nil {
		return err
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if err := writeBackup(s.path, data); err != nil {
		return fmt.Errorf("writing the backup of the state database: %w", err)
	}
	return nil
}

// writeBackup writes data as the newest backup of the store at path.
func writeBackup(path string, data []byte) error {
	dir := backupDir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	paths := BackupPaths(path)
	tmp := paths[0] + ".new"
	os.Remove(tmp) // a leftover of a crash; O_EXCL below refuses anything else there
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Rotate, oldest first; rename replaces a link, never follows it.
	for i := len(paths) - 1; i > 0; i-- {
		if err := os.Rename(paths[i-1], paths[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(tmp, paths[0]); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadBackup reads and verifies the backup file at file.
func ReadBackup(file string) (*Backup, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("reading backup %s: %w", file, err)
	}
	defer f.Close()
	var b Backup
	if err := json.NewDecoder(f).Decode(&b); err != nil {
		return nil, fmt.Errorf("reading backup %s: %w: %w", file, ErrCorrupt, err)
	}
	if b.Format != backupFormat {
		return nil, fmt.Errorf("reading backup %s: format %d, this kvmnet reads %d", file, b.Format, backupFormat)
	}
	sum, err := b.sum()
	if err != nil {
		return nil, err
	}
	if sum != b.SHA256 {
		return nil, fmt.Errorf("reading backup %s: %w: its checksum does not match its content", file, ErrCorrupt)
	}
	return &b, nil
}

// NewestBackup returns the newest backup of the store at path that reads
// and verifies, with its file, and the problems of the newer ones.
func NewestBackup(path string) (*Backup, string, error) {
	var errs []error
	for _, file := range BackupPaths(path) {
		b, err := ReadBackup(file)
		if err == nil {
			return b, file, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("no backup in %s: %w", backupDir(path), os.ErrNotExist)
	}
	return nil, "", errors.Join(errs...)
}

// Restore makes a new database at path from b: its revision (under the
// same number, so history goes on from there) and its originals. path
// must not exist: the caller moves a damaged file aside first.
func Restore(path string, b *Backup, note string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("restoring into %s: the file exists; move it aside first", path)
	}
	s, err := Open(path)
	if err != nil {
		return err
	}
	defer s.Close()
	err = s.update(func(tx *bolt.Tx) error {
		if b.Revision > 0 {
			meta, docs := tx.Bucket(bucketRevisions), tx.Bucket(bucketDocuments)
			m, err := json.Marshal(revisionMeta{Time: time.Now().UTC(), Note: b.Note, Size: len(b.Doc)})
			if err != nil {
				return err
			}
			if err := meta.SetSequence(b.Revision); err != nil {
				return err
			}
			if err := meta.Put(u64(b.Revision), m); err != nil {
				return err
			}
			if err := docs.Put(u64(b.Revision), b.Doc); err != nil {
				return err
			}
		}
		for k, v := range b.Originals {
			if err := tx.Bucket(bucketOriginals).Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return s.putEvent(tx, &Event{Kind: "restore", Message: note})
	})
	if err != nil {
		return fmt.Errorf("restoring %s: %w", path, err)
	}
	return nil
}
