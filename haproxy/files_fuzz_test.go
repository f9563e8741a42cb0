package haproxy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadCfgs checks readCfgs, the reader of the services directory, on
// directories of any shape. spec lists one entry a line, "<kind> <name>":
// f a regular file (content plus its line number), d a directory, l a
// symlink to the previous regular file, x a dangling symlink; a first line
// "link" reads the directory through a symlink to it. readCfgs must never
// panic, return a result or an error (never both), and a result holds
// exactly the regular *.cfg files, with their bytes.
func FuzzReadCfgs(f *testing.F) {
	f.Add("f a.cfg\nf b.txt\nd c.cfg\nf .hidden.cfg", []byte("frontend a\n"))
	f.Add("link\nf a.cfg\nl b.cfg\nf c", []byte("backend b\n\tserver s 10.0.0.1:80\n"))
	f.Add("x gone.cfg\nf a.cfg", []byte{})
	f.Add("d sub\nf .cfg\nf cfg", []byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, spec string, content []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "services.d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		read := dir
		want := Files{}
		maybe := map[string]bool{} // symlinks: followed or not, either is fine
		var lastFile string
		lines := strings.Split(spec, "\n")
		if len(lines) > 0 && lines[0] == "link" {
			read = filepath.Join(root, "link")
			if err := os.Symlink(dir, read); err != nil {
				t.Fatal(err)
			}
			lines = lines[1:]
		}
		for i, l := range lines[:min(len(lines), 20)] {
			kind, name, ok := strings.Cut(l, " ")
			if !ok || name == "" || name == "." || name == ".." || len(name) > 100 || strings.ContainsAny(name, "/\x00") {
				continue
			}
			p := filepath.Join(dir, name)
			if _, err := os.Lstat(p); err == nil {
				continue // a name listed twice
			}
			var err error
			switch kind {
			case "f":
				b := append(bytes.Clone(content), byte(i))
				err = os.WriteFile(p, b, 0o644)
				if strings.HasSuffix(name, ".cfg") {
					want[name] = b
				}
				lastFile = p
			case "d":
				err = os.Mkdir(p, 0o755)
			case "l":
				if lastFile == "" {
					continue
				}
				err = os.Symlink(lastFile, p)
				maybe[name] = true
			case "x":
				err = os.Symlink(filepath.Join(root, "missing"), p)
				maybe[name] = true
			default:
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := readCfgs(read)
		if (got == nil) == (err == nil) {
			t.Fatalf("readCfgs = %v, %v: want a result or an error", got, err)
		}
		if err != nil {
			return
		}
		for name, b := range want {
			if !bytes.Equal(got[name], b) {
				t.Errorf("%s: got %q, want %q", name, got[name], b)
			}
		}
		for name := range got {
			if _, ok := want[name]; !ok && !maybe[name] {
				t.Errorf("%s is not a regular .cfg file, but was read", name)
			}
		}
	})
}
