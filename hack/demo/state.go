package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lbd/lbd/hack/lab"
)

// down removes the demo lab and its state directory.
func down(c config, out io.Writer) error {
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	removed, err := removeDemo(dir)
	for _, r := range removed {
		fmt.Fprintf(out, "removed %s\n", r)
	}
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		fmt.Fprintln(out, "no demo lab found; nothing to remove")
	}
	return nil
}

// removeDemo kills every process in the lbd-demo-* namespaces, deletes
// them and removes the state directory dir (see removeStateDir). It
// returns what it removed.
func removeDemo(dir string) ([]string, error) {
	var removed []string
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w: %s", err, out)
	}
	var nss []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "lbd-"+labName+"-") {
			nss = append(nss, f[0])
		}
	}
	sort.Strings(nss)
	if err := lab.Sweep(labName); err != nil {
		return nil, err
	}
	if len(nss) > 0 {
		removed = append(removed, fmt.Sprintf("namespaces and their processes: %s", strings.Join(nss, " ")))
	}
	ok, err := removeStateDir(dir)
	if ok {
		removed = append(removed, "state directory "+dir)
	}
	return removed, err
}

// removeStateDir removes dir if it holds the demo's marker file or is
// empty, and reports whether it removed anything. A dir that is not the
// demo's is left alone and is an error, so that -dir cannot point the demo
// at a directory it does not own.
func removeStateDir(dir string) (bool, error) {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("state dir: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("state dir %s: not a directory", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		entries, rerr := os.ReadDir(dir)
		if rerr != nil || len(entries) > 0 {
			return false, fmt.Errorf("state dir %s exists but was not made by the demo (no %s): choose another -dir", dir, markerFile)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("state dir: %w", err)
	}
	return true, nil
}
