package model

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse feeds Parse arbitrary input. It must never panic, every error
// must be an *Error with a position inside the file, and whatever it
// accepts must survive a Marshal round trip.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(filepath.Join(repoRoot, dir, "*.yaml"))
		for _, path := range files {
			if data, err := os.ReadFile(path); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("networks: &n [{<<: *n}]\n"))
	f.Add([]byte("networks:\n  - &a {name: x, <<: *a}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			errs := Errors(err)
			if len(errs) == 0 {
				t.Fatalf("error without *Error: %v", err)
			}
			// YAML breaks lines at \n, \r\n and a lone \r alike (a
			// file with old Mac line ends is as many lines as it shows).
			lines := 1 + bytes.Count(bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n")), []byte("\n"))
			for _, e := range errs {
				if e.File != "fuzz.yaml" || e.Msg == "" {
					t.Fatalf("malformed error %+v", e)
				}
				if e.Line < 1 || e.Line > lines || e.Column < 1 {
					t.Fatalf("error without a position inside the file (%d lines): %+v\ninput:\n%s", lines, e, data)
				}
			}
			return
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\ninput:\n%s\nmarshalled:\n%s", err, data, out)
		}
		if diff := cmp.Diff(c, c2, cmpConfig); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s\ninput:\n%s\nmarshalled:\n%s", diff, data, out)
		}
	})
}
