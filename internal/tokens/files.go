package tokens

import (
	"fmt"
	"os"
	"path/filepath"
)

// fileContent is one file for writeFilesAtomic.
type fileContent struct {
	path string
	perm os.FileMode
	data []byte
}

// writeFilesAtomic writes each file to a temporary file beside it (created
// with the final mode, synced) and, once all are written, renames them into
// place in order. A failure before the renames leaves every target as it
// was; a reader never sees a partially written file.
func writeFilesAtomic(files ...fileContent) error {
	temps := make([]string, 0, len(files))
	removeTemps := func() {
		for _, name := range temps {
			_ = os.Remove(name) // best effort: the rename may already have moved it
		}
	}
	for _, f := range files {
		name, err := writeTemp(f)
		if err != nil {
			removeTemps()
			return err
		}
		temps = append(temps, name)
	}
	for i, f := range files {
		if err := os.Rename(temps[i], f.path); err != nil {
			removeTemps()
			return fmt.Errorf("renaming %s into place: %w", f.path, err)
		}
	}
	for _, dir := range uniqueDirs(files) {
		syncDir(dir)
	}
	return nil
}

// writeTemp writes f's data to a new temporary file in f's directory and
// returns its name.
func writeTemp(f fileContent) (name string, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(f.path), "."+filepath.Base(f.path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("creating temporary file for %s: %w", f.path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name()) // best effort cleanup of our own temporary file
		}
	}()
	// CreateTemp made the file 0600, so the data is never readable by others
	// while it is written; Chmod then sets the final mode.
	_, err = tmp.Write(f.data)
	if err == nil {
		err = tmp.Chmod(f.perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return "", fmt.Errorf("writing temporary file for %s: %w", f.path, err)
	}
	return tmp.Name(), nil
}

// uniqueDirs lists the directories of files, each once.
func uniqueDirs(files []fileContent) []string {
	var dirs []string
	seen := make(map[string]bool)
	for _, f := range files {
		if dir := filepath.Dir(f.path); !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

// syncDir flushes a directory so that renames into it survive a crash. It is
// best effort: some filesystems cannot sync a directory, and the files
// themselves are already complete.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
