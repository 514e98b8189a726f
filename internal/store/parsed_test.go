package store

import (
	"bytes"
	"fmt"
	"testing"
)

func TestParsed(t *testing.T) {
	s, _ := openTemp(t)
	if blob, err := s.Parsed(1, "prog-a"); err != nil || blob != nil {
		t.Fatalf("empty store: got %q, %v; want nothing", blob, err)
	}
	save := func(rev uint64, stamp string, blob []byte) {
		t.Helper()
		if err := s.SaveParsed(rev, stamp, blob); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SaveDesired([]byte("doc one"), "one"); err != nil {
		t.Fatal(err)
	}
	save(1, "prog-a", []byte("one"))
	event := func(rev uint64) *Event { return &Event{Kind: "apply", Message: fmt.Sprintf("revision %d", rev)} }
	if _, err := s.SaveDesiredWith([]byte("doc two"), "two", With{Stamp: "prog-a", Parsed: []byte("two\x00bytes"), Event: event}); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.Events(0); err != nil || len(evs) != 1 || evs[0].Message != "revision 2" {
		t.Errorf("events after SaveDesiredWith: %+v, %v; want one, of revision 2", evs, err)
	}
	// Written late for a revision that is no longer the newest: ignored.
	save(1, "prog-a", []byte("one, late"))
	for _, tt := range []struct {
		rev   uint64
		stamp string
		want  []byte
	}{
		{2, "prog-a", []byte("two\x00bytes")},
		{1, "prog-a", nil}, // replaced by revision 2's
		{2, "prog-b", nil}, // written by another program
		{3, "prog-a", nil},
	} {
		got, err := s.Parsed(tt.rev, tt.stamp)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("Parsed(%d, %q) = %q, %v; want %q", tt.rev, tt.stamp, got, err, tt.want)
		}
	}
}
