package haproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The services directory is a symlink to a generation directory; a sync
// writes the whole new set into a fresh generation, validates it there and
// publishes it by renaming a new symlink over the old one, so haproxy (or
// an operator running "systemctl reload") only ever sees a complete,
// validated set. Rolling back is the same rename towards the previous
// generation, which is kept until the new one is confirmed.

// tree names the paths lbd manages for one services directory.
type tree struct {
	dir  string // the services directory (a symlink once lbd manages it)
	gens string // where generations live, beside dir: ".<base>.lbd"
	// marker exists from just before dir is pointed at a new generation
	// until haproxy is confirmed to serve it: ".<base>.lbd-reload-pending".
	marker string
}

func newTree(dir string) tree {
	dir = filepath.Clean(dir)
	hidden := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir))
	return tree{dir: dir, gens: hidden + ".lbd", marker: hidden + ".lbd-reload-pending"}
}

// pending is the reload marker's content: generation Gen was published
// (or is about to be) and haproxy has not been seen serving it. Prev is
// the last generation haproxy was confirmed to serve ("" if none), kept
// for a rollback until the marker goes.
//
// Master, Reloads and Workers are what the master CLI's "show proc" said
// before the reload was asked for (Master 0: no master socket answered),
// so that a later pass can tell a reload that took, failed, is still in
// progress or was never asked for.
type pending struct {
	Gen     string    `json:"gen"`
	Prev    string    `json:"prev,omitempty"`
	Since   time.Time `json:"since"`
	Master  int       `json:"master,omitempty"`
	Reloads int       `json:"reloads,omitempty"`
	Workers []int     `json:"workers,omitempty"`
}

// markPending writes the marker durably (temp file, fsync, rename, fsync
// of the directory), before dir changes.
func (t tree) markPending(p pending) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("write reload marker: %w", err)
	}
	if err := writeAtomic(t.marker, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write reload marker: %w", err)
	}
	return nil
}

// readPending returns the marker, or nil when there is none. A marker
// that cannot be parsed still means a reload is owed: it is returned
// with only Since set from its modification time.
func (t tree) readPending() (*pending, error) {
	b, err := os.ReadFile(t.marker)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read reload marker: %w", err)
	}
	var p pending
	if json.Unmarshal(b, &p) != nil {
		p = pending{}
		if fi, err := os.Stat(t.marker); err == nil {
			p.Since = fi.ModTime()
		}
	}
	return &p, nil
}

// clearPending removes the marker durably, once haproxy serves what dir
// holds.
func (t tree) clearPending() error {
	if err := os.Remove(t.marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove reload marker: %w", err)
	}
	if err := syncDir(filepath.Dir(t.marker)); err != nil {
		return fmt.Errorf("remove reload marker: %w", err)
	}
	return nil
}

// exists reports whether gen is a generation directory that still exists.
func (t tree) exists(gen string) bool {
	if gen == "" || filepath.Dir(gen) != t.gens {
		return false
	}
	fi, err := os.Stat(gen)
	return err == nil && fi.IsDir()
}

// readCfgs returns the *.cfg regular files of dir (following dir itself if
// it is a symlink), the files haproxy loads from it. A missing dir is an
// empty set.
func readCfgs(dir string) (Files, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Files{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read services directory: %w", err)
	}
	out := make(Files, len(ents))
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".cfg") || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read services directory: %w", err)
		}
		out[e.Name()] = b
	}
	return out, nil
}

// ownFile reports whether b is a file lbd wrote: its first line is the
// header [Render] begins every file with, "# Service <key>, written by
// lbd: ..." ("# Peers ..., written by lbd: ..." for [PeersFile], "# Shard
// ..., written by lbd: ..." for a shard). Anything else in the services
// directory is the operator's.
func ownFile(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return (bytes.HasPrefix(line, []byte("# Service ")) || bytes.HasPrefix(line, []byte("# Peers ")) || bytes.HasPrefix(line, []byte("# Shard "))) &&
		bytes.Contains(line, []byte(", written by lbd: "))
}

// ownPath reports whether the regular file at path is one lbd wrote.
func ownPath(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	return ownFile(head[:n])
}

// splitOwn splits a directory's files into lbd's and the operator's.
func splitOwn(cur Files) (own, foreign Files) {
	own, foreign = Files{}, Files{}
	for name, b := range cur {
		if ownFile(b) {
			own[name] = b
		} else {
			foreign[name] = b
		}
	}
	return own, foreign
}

// current returns the generation dir points at, or "" when dir is not a
// symlink lbd made (missing, or a plain directory).
func (t tree) current() string {
	target, err := os.Readlink(t.dir)
	if err != nil {
		return ""
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(filepath.Dir(t.dir), target)
	}
	if filepath.Dir(target) != t.gens {
		return ""
	}
	return target
}

// adopt turns a plain services directory (made by hand or by an older
// install) into a generation, so the rest of the code deals with symlinks
// only. dir is briefly missing; this happens once per host.
func (t tree) adopt() error {
	fi, err := os.Lstat(t.dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Mode()&fs.ModeSymlink != 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("services directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("services directory %s is not a directory", t.dir)
	}
	if err := os.MkdirAll(t.gens, 0o755); err != nil {
		return fmt.Errorf("adopt services directory: %w", err)
	}
	gen := filepath.Join(t.gens, "gen-adopted-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(t.dir, gen); err != nil {
		return fmt.Errorf("adopt services directory: %w", err)
	}
	if err := t.point(gen); err != nil {
		// Put the directory back where it was.
		return errors.Join(err, os.Rename(gen, t.dir))
	}
	return nil
}

// write makes a new generation holding files (as they go on disk). A file
// whose bytes equal the current generation's file of that name is
// hard-linked rather than rewritten. The files
// are new and invisible until the generation is published, so they are
// written in place and made durable by one syncfs before returning, which
// costs far less than one fsync per file.
func (t tree) write(files Files) (string, error) {
	if err := os.MkdirAll(t.gens, 0o755); err != nil {
		return "", fmt.Errorf("create generation: %w", err)
	}
	gen, err := os.MkdirTemp(t.gens, "gen-")
	if err != nil {
		return "", fmt.Errorf("create generation: %w", err)
	}
	if err := os.Chmod(gen, 0o755); err != nil {
		os.RemoveAll(gen)
		return "", fmt.Errorf("create generation: %w", err)
	}
	if err := t.carry(gen, files); err != nil {
		os.RemoveAll(gen)
		return "", err
	}
	old := t.current()
	for name, b := range files {
		p := filepath.Join(gen, name)
		if old != "" && sameBytes(filepath.Join(old, name), b) {
			if os.Link(filepath.Join(old, name), p) == nil {
				continue
			}
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			os.RemoveAll(gen)
			return "", fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := syncDir(gen); err != nil {
		os.RemoveAll(gen)
		return "", fmt.Errorf("sync generation: %w", err)
	}
	return gen, nil
}

// sameBytes reports whether the regular file at path holds exactly b.
func sameBytes(path string, b []byte) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(b)) {
		return false
	}
	got, err := os.ReadFile(path)
	return err == nil && bytes.Equal(got, b)
}

// carry puts into gen everything of the current services directory that
// lbd did not write and files does not name: regular files as hard links,
// symlinks as copies of the link. Directories and other entries cannot be
// carried; prune moves them to a backup.
func (t tree) carry(gen string, files Files) error {
	ents, err := os.ReadDir(t.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read services directory: %w", err)
	}
	for _, e := range ents {
		if _, ours := files[e.Name()]; ours {
			continue
		}
		p, q := filepath.Join(t.dir, e.Name()), filepath.Join(gen, e.Name())
		switch {
		case e.Type().IsRegular():
			if ownPath(p) {
				continue // a service lbd no longer serves
			}
			if err := os.Link(p, q); err != nil {
				return fmt.Errorf("keep %s: %w", p, err)
			}
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err == nil {
				err = os.Symlink(target, q)
			}
			if err != nil {
				return fmt.Errorf("keep %s: %w", p, err)
			}
		}
	}
	return nil
}

// syncDir flushes the file system holding dir, and dir's entries.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return err
	}
	return f.Sync()
}

// point atomically makes dir a symlink to gen: a new symlink beside dir is
// renamed over it.
func (t tree) point(gen string) error {
	tmp := t.dir + ".lbd-new"
	os.Remove(tmp)
	rel, err := filepath.Rel(filepath.Dir(t.dir), gen)
	if err != nil {
		rel = gen
	}
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("publish %s: %w", gen, err)
	}
	if err := os.Rename(tmp, t.dir); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("publish %s: %w", gen, err)
	}
	if err := syncDir(filepath.Dir(t.dir)); err != nil {
		return fmt.Errorf("publish %s: %w", gen, err)
	}
	return nil
}

// prune removes every generation but keep. It deletes only what lbd
// wrote and what keep holds too (the same file, or a symlink to the same
// target); anything else, the operator's, is moved into a backup
// directory beside the services directory, "<dir>.lbd-backup-<time>", and
// returned as (old path, new path) pairs.
func (t tree) prune(keep string) ([][2]string, error) {
	ents, err := os.ReadDir(t.gens)
	if err != nil {
		return nil, fmt.Errorf("prune generations: %w", err)
	}
	var (
		moved  [][2]string
		errs   []error
		backup string
	)
	aside := func(p string) error {
		if backup == "" {
			backup = t.dir + ".lbd-backup-" + time.Now().UTC().Format("20060102T150405Z")
			if err := os.MkdirAll(backup, 0o755); err != nil {
				return err
			}
		}
		q := filepath.Join(backup, filepath.Base(p))
		if _, err := os.Lstat(q); err == nil {
			q += "." + filepath.Base(filepath.Dir(p))
		}
		if err := os.Rename(p, q); err != nil {
			return err
		}
		moved = append(moved, [2]string{p, q})
		return nil
	}
	for _, g := range ents {
		gen := filepath.Join(t.gens, g.Name())
		if gen == keep {
			continue
		}
		files, err := os.ReadDir(gen)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range files {
			p, k := filepath.Join(gen, e.Name()), filepath.Join(keep, e.Name())
			var dup bool
			switch {
			case e.Type().IsRegular():
				pi, err1 := os.Lstat(p)
				ki, err2 := os.Lstat(k)
				dup = (err1 == nil && err2 == nil && os.SameFile(pi, ki)) || ownPath(p)
			case e.Type()&fs.ModeSymlink != 0:
				a, err1 := os.Readlink(p)
				b, err2 := os.Readlink(k)
				dup = err1 == nil && err2 == nil && a == b
			}
			if dup {
				errs = append(errs, os.Remove(p))
			} else {
				errs = append(errs, aside(p))
			}
		}
		errs = append(errs, os.Remove(gen))
	}
	if err := errors.Join(errs...); err != nil {
		return moved, fmt.Errorf("prune generations: %w", err)
	}
	return moved, nil
}

// writeAtomic writes b to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory.
func writeAtomic(path string, b []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// diskFile is a file of the services directory as last read: its bytes
// and the identity (inode, size, modification time) they were read with.
type diskFile struct {
	id   fileID
	data []byte
}

type fileID struct {
	ino, size, mtime int64
}

func idOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = int64(st.Ino)
	}
	return id
}

// readCfgsCached is readCfgs reading again only the files whose inode,
// size or modification time changed since the last call: at 10,000
// services, reading every file costs far more than the change it serves.
// A hand edit changes the modification time, so it is still seen.
func (b *Backend) readCfgsCached() (Files, error) {
	ents, err := os.ReadDir(b.tree.dir)
	if errors.Is(err, fs.ErrNotExist) {
		b.disk = nil
		return Files{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read services directory: %w", err)
	}
	out := make(Files, len(ents))
	next := make(map[string]diskFile, len(ents))
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".cfg") || e.IsDir() {
			continue
		}
		p := filepath.Join(b.tree.dir, e.Name())
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("read services directory: %w", err)
		case fi.IsDir():
			continue
		}
		id := idOf(fi)
		if c, ok := b.disk[e.Name()]; ok && c.id == id {
			out[e.Name()], next[e.Name()] = c.data, c
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read services directory: %w", err)
		}
		out[e.Name()], next[e.Name()] = data, diskFile{id, data}
	}
	b.disk = next
	return out, nil
}
