package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketParsed holds the parsed form of one revision of the desired state
// (rev -> stamp, NUL, blob), so that a process that just started (the CLI
// without a daemon) need not parse a large document again. It is a cache:
// losing it costs one parse. Part of the on-disk format: never rename it.
var bucketParsed = []byte("parsed")

// SaveParsed keeps blob as the parsed form of revision rev, written by
// the program stamp names (parsed forms are only good for the program
// that wrote them), in place of any other revision's. It does nothing
// when rev is not the newest revision.
func (s *Store) SaveParsed(rev uint64, stamp string, blob []byte) error {
	err := s.update(func(tx *bolt.Tx) error { return putParsed(tx, rev, stamp, blob) })
	if err != nil {
		return fmt.Errorf("saving parsed desired state: %w", err)
	}
	return nil
}

// Parsed returns the parsed form SaveParsed kept for revision rev by the
// program stamp names, or nil when there is none.
func (s *Store) Parsed(rev uint64, stamp string) ([]byte, error) {
	var blob []byte
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketParsed)
		if b == nil {
			return nil
		}
		v := b.Get(u64(rev))
		st, rest, ok := bytes.Cut(v, []byte{0})
		if !ok || string(st) != stamp {
			return nil
		}
		// Values are only valid inside the transaction.
		blob = append([]byte(nil), rest...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading parsed desired state: %w", err)
	}
	return blob, nil
}

func putParsed(tx *bolt.Tx, rev uint64, stamp string, blob []byte) error {
	// A form written late (in the background) for a revision that is no
	// longer the newest is of no use, and must not replace the newest's.
	if k, _ := tx.Bucket(bucketRevisions).Cursor().Last(); fromU64(k) != rev {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketParsed)
	if err != nil {
		return err
	}
	// Only the newest revision is ever read back.
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	v := make([]byte, 0, len(stamp)+1+len(blob))
	v = append(append(append(v, stamp...), 0), blob...)
	return b.Put(u64(rev), v)
}
