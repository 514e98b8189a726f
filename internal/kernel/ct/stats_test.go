package ct

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadConntrackStat(t *testing.T) {
	for name, tc := range map[string]struct {
		data string
		want map[string]uint64
	}{
		"6.x kernel (fixture)": {
			data: mustRead(t, "testdata/proc/net/stat/nf_conntrack"),
			want: map[string]uint64{
				"entries": 42, "found": 10, "invalid": 8, "insert_failed": 0x11, "drop": 0x22, "early_drop": 0x33,
				"clashres": 0, "new": 0, "ignore": 0, "delete": 0, "chainlength": 0, "insert": 0, "icmp_error": 0,
				"expect_new": 0, "expect_create": 0, "expect_delete": 0, "search_restart": 0,
			},
		},
		// Before 5.x some columns had other names; the ones exported did not
		// move, but they are found by name, not position, anyway.
		"4.19 kernel": {
			data: "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n" +
				"00000005  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 000000ff 00000001 00000000  00000000 00000000 00000000 00000000\n",
			want: map[string]uint64{
				"entries": 5, "drop": 255, "early_drop": 1,
				"searched": 0, "found": 0, "new": 0, "invalid": 0, "ignore": 0, "delete": 0, "delete_list": 0, "insert": 0,
				"insert_failed": 0, "icmp_error": 0, "expect_new": 0, "expect_create": 0, "expect_delete": 0, "search_restart": 0,
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "nf_conntrack")
			if err := os.WriteFile(path, []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := readConntrackStat(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestReadConntrackStatErrors(t *testing.T) {
	for name, tc := range map[string]struct{ data, want string }{
		"short row":   {"entries drop\n00000001\n", "row 1 has 1 columns, header has 2"},
		"not hex":     {"entries drop\n00000001 zz\n", "drop of row 1"},
		"empty file":  {"", "no header"},
		"header only": {"entries drop\n", ""},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "nf_conntrack")
			if err := os.WriteFile(path, []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := readConntrackStat(path)
			if tc.want == "" {
				if err != nil {
					t.Errorf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestReadStats reads a fixture /proc, and one without the module.
func TestReadStats(t *testing.T) {
	root := t.TempDir()
	st, err := ReadStats(root)
	if err != nil || st.Loaded || st.PerCPU != nil {
		t.Errorf("without nf_conntrack: %+v, %v", st, err)
	}
	dir := filepath.Join(root, "sys", "net", "netfilter")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "nf_conntrack_count"), []byte("42\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "nf_conntrack_max"), []byte("262144\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "net", "stat"), 0o755)
	os.WriteFile(filepath.Join(root, "net", "stat", "nf_conntrack"), []byte(mustRead(t, "testdata/proc/net/stat/nf_conntrack")), 0o644)
	st, err = ReadStats(root)
	if err != nil || !st.Loaded || st.Count != 42 || st.Max != 262144 || st.PerCPU["drop"] != 0x22 {
		t.Errorf("with nf_conntrack: %+v, %v", st, err)
	}
	os.WriteFile(filepath.Join(dir, "nf_conntrack_max"), []byte("lots\n"), 0o644)
	if _, err := ReadStats(root); err == nil || !strings.Contains(err.Error(), "nf_conntrack_max") {
		t.Errorf("a bad nf_conntrack_max: %v", err)
	}
}
