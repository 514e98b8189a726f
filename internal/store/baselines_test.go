package store

import (
	"slices"
	"testing"
)

// TestBaselines: saved, replaced, listed, and a missing one is NotFound.
func TestBaselines(t *testing.T) {
	s, _ := openTemp(t)
	if _, err := s.Baseline("q1"); !IsNotFound(err) {
		t.Fatalf("missing baseline: %v, want not found", err)
	}
	for _, b := range []struct{ name, data string }{{"q1", `{"a":1}`}, {"q2", `{"b":2}`}, {"q1", `{"a":3}`}} {
		if err := s.SaveBaseline(b.name, []byte(b.data)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Baseline("q1")
	if err != nil || string(got) != `{"a":3}` {
		t.Errorf("q1 = %s, %v; want the second save", got, err)
	}
	names, err := s.Baselines()
	if err != nil || !slices.Equal(names, []string{"q1", "q2"}) {
		t.Errorf("names %q, %v", names, err)
	}
}
