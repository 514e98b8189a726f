package store

import (
	"bytes"
	"testing"
)

func TestParsed(t *testing.T) {
	s, _ := openTemp(t)
	if blob, err := s.Parsed(1, "prog-a"); err != nil || blob != nil {
		t.Fatalf("empty store: got %q, %v; want nothing", blob, err)
	}
	if err := s.SaveParsed(1, "prog-a", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveParsed(2, "prog-a", []byte("two\x00bytes")); err != nil {
		t.Fatal(err)
	}
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
