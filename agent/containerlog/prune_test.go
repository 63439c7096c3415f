package containerlog

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestPruneRotatedKeepsOnlyTheFileBeingWritten(t *testing.T) {
	root := t.TempDir()
	a := filepath.Join(root, "default_web-a", "app")
	b := filepath.Join(root, "default_web-b", "app")
	files := map[string][]string{
		a: {"1.1.log", "1.2.log", "2.3.log", "2.4.log", "2.5.log"},
		b: {"1.1.log"},
	}
	for dir, names := range files {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), make([]byte, 100), 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	freed, err := PruneRotated(root)
	if err != nil {
		t.Fatal(err)
	}
	if freed != 400 {
		t.Errorf("freed %d bytes, want 400", freed)
	}
	for dir, want := range map[string][]string{a: {"2.5.log"}, b: {"1.1.log"}} {
		ents, _ := os.ReadDir(dir)
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s holds %v, want %v", dir, got, want)
		}
	}
	if _, err := PruneRotated(filepath.Join(root, "missing")); err != nil {
		t.Errorf("a missing root: %v", err)
	}
}
