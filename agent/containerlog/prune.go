package containerlog

import (
	"io/fs"
	"os"
	"path/filepath"
)

// PruneRotated frees disk under root, a tree of container log directories,
// for a node short of it: in each directory it keeps only the file being
// written (the newest file of the newest run) and removes rotated files
// and earlier runs, so `previous` and old lines are lost but no running
// container's output is. A writer whose old files vanish carries on. It
// returns the bytes it removed.
func PruneRotated(root string) (freed int64, err error) {
	dirs := map[string]layout{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		l, err := readLayout(p)
		if err == nil && len(l.runs) > 0 {
			dirs[p] = l
		}
		return nil
	})
	for dir, l := range dirs {
		last := l.last()
		seqs := l.files[last]
		keep := seqs[len(seqs)-1]
		for _, run := range l.runs {
			for _, seq := range l.files[run] {
				if run == last && seq == keep {
					continue
				}
				p := path(dir, run, seq)
				if fi, serr := os.Stat(p); serr == nil {
					if os.Remove(p) == nil {
						freed += fi.Size()
					}
				}
			}
		}
	}
	return freed, err
}
