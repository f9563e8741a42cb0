package haproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// calls counts the haproxy invocations a Backend makes and lets a test make
// them fail.
type calls struct {
	checks, reloads     int
	checkErr, reloadErr error
	checkedDirs         []string
	dirAtReload         Files
	dir                 string
}

// fakeBackend returns a Backend in a temp dir whose check and reload are
// counted and do not run haproxy; check runs the real "haproxy -c" when
// realCheck is set.
func fakeBackend(t *testing.T, realCheck bool) (*Backend, *calls) {
	t.Helper()
	o := testOptions(t.TempDir())
	b := New(o, nil)
	b.bindable = bindAnything // the test's addresses are not this host's
	c := &calls{dir: o.Dir}
	check := b.check
	b.check = func(ctx context.Context, base, dir string, files Files) error {
		c.checks++
		c.checkedDirs = append(c.checkedDirs, dir)
		if c.checkErr != nil {
			return c.checkErr
		}
		if realCheck {
			return check(ctx, base, dir, files)
		}
		return nil
	}
	b.reload = func(ctx context.Context) error {
		c.reloads++
		var err error
		c.dirAtReload, err = readCfgs(o.Dir)
		if err != nil {
			t.Errorf("read services at reload: %v", err)
		}
		return c.reloadErr
	}
	return b, c
}

func onDisk(t *testing.T, b *Backend) Files {
	t.Helper()
	f, err := readCfgs(b.o.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func rendered1(t *testing.T, svcs ...lb.Service) Files {
	t.Helper()
	f, err := Render(svcs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestApplyWritesValidatesReloads(t *testing.T) {
	ctx := context.Background()
	b, c := fakeBackend(t, true)
	web := nginx()
	if _, err := b.Apply(ctx, []lb.Service{web}, nil); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := rendered1(t, web)
	if diff := cmp.Diff(want, onDisk(t, b)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, c.dirAtReload); diff != "" {
		t.Errorf("files published before reload (-want +got):\n%s", diff)
	}
	if c.checks != 1 || c.reloads != 1 {
		t.Errorf("checks, reloads = %d, %d; want 1, 1", c.checks, c.reloads)
	}
	if base, err := os.ReadFile(b.o.BasePath); err != nil || string(base) != string(RenderBase(b.o)) {
		t.Errorf("base file not written as RenderBase: %v", err)
	}
	fi, err := os.Lstat(b.o.Dir)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("services dir is not a symlink: %v %v", fi, err)
	}
	if st, _ := os.Stat(filepath.Join(b.o.Dir, "default_nginx.cfg")); st == nil || st.Mode().Perm() != 0o644 {
		t.Errorf("service file mode = %v, want 0644", st)
	}

	// Same services again: no write, no haproxy call.
	if _, err := b.Apply(ctx, []lb.Service{web}, nil); err != nil {
		t.Fatalf("Apply unchanged: %v", err)
	}
	if c.checks != 1 || c.reloads != 1 {
		t.Errorf("unchanged Apply made haproxy calls: checks, reloads = %d, %d; want 1, 1", c.checks, c.reloads)
	}

	// A second service; the first file is linked, not rewritten, and only
	// one generation remains afterwards.
	other := nginx()
	other.Name = "other"
	if _, err := b.Apply(ctx, []lb.Service{web, other}, nil); err != nil {
		t.Fatalf("Apply two: %v", err)
	}
	if diff := cmp.Diff(rendered1(t, web, other), onDisk(t, b)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	gens, _ := os.ReadDir(b.tree.gens)
	if len(gens) != 1 {
		t.Errorf("%d generations left, want 1", len(gens))
	}

	// Deleting a service removes its file.
	if _, err := b.Apply(ctx, []lb.Service{other}, nil); err != nil {
		t.Fatalf("Apply delete: %v", err)
	}
	if diff := cmp.Diff(rendered1(t, other), onDisk(t, b)); diff != "" {
		t.Errorf("files after delete (-want +got):\n%s", diff)
	}
	if c.checks != 3 || c.reloads != 3 {
		t.Errorf("checks, reloads = %d, %d; want 3, 3", c.checks, c.reloads)
	}

	if err := b.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := onDisk(t, b); len(got) != 0 {
		t.Errorf("files after Cleanup: %v", got.Names())
	}
	if c.reloads != 4 {
		t.Errorf("Cleanup did not reload: reloads = %d", c.reloads)
	}
}

func TestApplyFailureKeepsPreviousFiles(t *testing.T) {
	ctx := context.Background()
	web := nginx()
	changed := nginx()
	changed.Ports[0].Endpoints = changed.Ports[0].Endpoints[:1]
	tests := []struct {
		name      string
		checkErr  error
		reloadErr error
		brokenCfg bool
		wantAs    any
	}{
		{name: "haproxy -c rejects the base file", brokenCfg: true, wantAs: new(*ConfigError)},
		{name: "reload fails", reloadErr: &ReloadError{Mode: "master CLI", Err: errors.New("no new worker")}, wantAs: new(*ReloadError)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, c := fakeBackend(t, true)
			if _, err := b.Apply(ctx, []lb.Service{web}, nil); err != nil {
				t.Fatalf("first Apply: %v", err)
			}
			before := onDisk(t, b)
			prevGen := b.tree.current()
			if tt.brokenCfg {
				if err := os.WriteFile(b.o.BasePath, []byte("global\n    bogus-keyword 1\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c.reloadErr = tt.reloadErr
			_, err := b.Apply(ctx, []lb.Service{changed}, nil)
			if err == nil {
				t.Fatal("Apply succeeded, want an error")
			}
			if !errors.As(err, tt.wantAs) {
				t.Errorf("error %v (%T) is not a %T", err, err, tt.wantAs)
			}
			if tt.brokenCfg && !strings.Contains(err.Error(), "bogus-keyword") {
				t.Errorf("error does not carry haproxy's text: %v", err)
			}
			if diff := cmp.Diff(before, onDisk(t, b)); diff != "" {
				t.Errorf("files after failed Apply (-want +got):\n%s", diff)
			}
			if got := b.tree.current(); got != prevGen {
				t.Errorf("services dir points at %s, want the previous generation %s", got, prevGen)
			}
			gens, _ := os.ReadDir(b.tree.gens)
			if len(gens) != 1 {
				t.Errorf("%d generations left after rollback, want 1", len(gens))
			}
		})
	}
}

func TestApplyFirstReloadFailsLeavesEmptyDir(t *testing.T) {
	b, c := fakeBackend(t, false)
	c.reloadErr = errors.New("boom")
	if _, err := b.Apply(context.Background(), []lb.Service{nginx()}, nil); err == nil {
		t.Fatal("Apply succeeded, want an error")
	}
	fi, err := os.Stat(b.o.Dir)
	if err != nil || !fi.IsDir() {
		t.Fatalf("services dir after failed first Apply: %v %v, want an empty directory", fi, err)
	}
	if got := onDisk(t, b); len(got) != 0 {
		t.Errorf("files: %v, want none", got.Names())
	}
}

func TestApplyAdoptsPlainDirectory(t *testing.T) {
	b, _ := fakeBackend(t, false)
	if err := os.MkdirAll(b.o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.o.Dir, "old.cfg"), []byte("# by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(context.Background(), []lb.Service{nginx()}, nil); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := rendered1(t, nginx())
	want["old.cfg"] = []byte("# by hand\n") // the operator's: kept
	if diff := cmp.Diff(want, onDisk(t, b)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestApplySkipsServicesWithoutTCP(t *testing.T) {
	ctx := context.Background()
	b, c := fakeBackend(t, true)
	dns := lb.Service{
		Namespace: "kube-system", Name: "dns", ExternalIPs: []netip.Addr{ip("192.168.121.210")},
		Ports:    []lb.Port{{Name: "dns-tcp", Port: 53, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.9", 53, true)}}},
		Affinity: lb.AffinityNone,
	}
	if _, err := b.Apply(ctx, []lb.Service{dns}, nil); err != nil {
		t.Fatal(err)
	}
	// Now the service has UDP only: it is skipped and its file kept.
	udpOnly := dns.Clone()
	udpOnly.Ports[0].Protocol = lb.UDP
	mixed := nginx()
	mixed.Ports = append(mixed.Ports, lb.Port{Name: "dns", Port: 53, Protocol: lb.UDP})
	mixed.Ports[0].Name = "http"
	skipped, err := b.Apply(ctx, []lb.Service{*udpOnly, mixed}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []lb.Skipped{{Key: "kube-system/dns", Reason: "service kube-system/dns: no TCP port; haproxy cannot serve 53/UDP; use --backend=iptables"}}
	if diff := cmp.Diff(want, skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	// What is on disk is what Verify expects from the applied state the
	// reconciler keeps: the old dns and the new, partly served, nginx.
	if diff := cmp.Diff(rendered1(t, dns, mixed), onDisk(t, b)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if c.reloads != 2 {
		t.Errorf("reloads = %d, want 2", c.reloads)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	web, other := nginx(), nginx()
	other.Name = "other"
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   []string
	}{
		{name: "clean", tamper: func(*testing.T, string) {}},
		{
			name: "edited",
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "default_nginx.cfg")
				b, _ := os.ReadFile(p)
				write(t, p, strings.Replace(string(b), "10.246.82.6", "10.246.82.7", -1))
			},
			want: []string{"file DIR/default_nginx.cfg: edited (differs from what lbd wrote)"},
		},
		{
			name: "removed and added",
			tamper: func(t *testing.T, dir string) {
				os.Remove(filepath.Join(dir, "default_other.cfg"))
				write(t, filepath.Join(dir, "zz.cfg"), "# Service default/zz, written by lbd: edits are overwritten on the next sync.\n")
				write(t, filepath.Join(dir, "hand.cfg"), "# hand made: the operator's, not drift\n")
			},
			want: []string{"file DIR/default_other.cfg: missing", "file DIR/zz.cfg: written by lbd for no applied service"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, c := fakeBackend(t, false)
			applied := []lb.Service{web, other}
			if _, err := b.Apply(ctx, applied, nil); err != nil {
				t.Fatal(err)
			}
			checks, reloads := c.checks, c.reloads
			tt.tamper(t, b.o.Dir)
			got, err := b.Verify(ctx, applied)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				got[i] = strings.ReplaceAll(got[i], b.o.Dir, "DIR")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Verify (-want +got):\n%s", diff)
			}
			if c.checks != checks || c.reloads != reloads {
				t.Errorf("Verify called haproxy")
			}
			// Apply repairs what Verify found.
			if _, err := b.Apply(ctx, applied, nil); err != nil {
				t.Fatal(err)
			}
			if got, _ := b.Verify(ctx, applied); len(got) != 0 {
				t.Errorf("drift after repair: %v", got)
			}
			if slices.Contains(c.checkedDirs, b.o.Dir) {
				t.Errorf("haproxy -c ran on the live directory, want a staged generation")
			}
		})
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestApplyNothingMakesFilesHaproxyNeeds(t *testing.T) {
	b, c := fakeBackend(t, false)
	if _, err := b.Apply(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(b.o.Dir); err != nil || !fi.IsDir() {
		t.Errorf("services dir: %v %v, want a directory", fi, err)
	}
	if _, err := os.Stat(b.o.BasePath); err != nil {
		t.Errorf("base file: %v", err)
	}
	if c.checks+c.reloads != 0 {
		t.Errorf("haproxy calls: %d checks, %d reloads; want none", c.checks, c.reloads)
	}
}

// TestReloadWhenHaproxyIsNotRunning: haproxy may start after lbd (the
// notes' order). With no master socket, or a stale one, and systemd saying
// haproxy is inactive, the files are put in place and the sync succeeds;
// a failing operator command still fails.
func TestReloadWhenHaproxyIsNotRunning(t *testing.T) {
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the socket file stays, nobody listens: a dead haproxy
	tests := []struct {
		name    string
		socket  string
		reload  string
		wantErr bool
		wantRun []string
	}{
		{name: "no socket and systemd says inactive", socket: filepath.Join(t.TempDir(), "none.sock"), wantRun: []string{"systemctl is-active haproxy"}},
		{name: "stale socket", socket: stale},
		{name: "operator command fails", socket: filepath.Join(t.TempDir(), "none.sock"), reload: "false", wantErr: true, wantRun: []string{"/bin/sh -c false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t.TempDir())
			o.MasterSocket, o.Reload = tt.socket, tt.reload
			b := New(o, nil)
			b.bindable = bindAnything // the test's addresses are not this host's
			var ran []string
			run := b.run
			b.run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
				if name == b.Options().HaproxyBin {
					return run(ctx, name, args...) // the real haproxy -c
				}
				ran = append(ran, strings.Join(append([]string{name}, args...), " "))
				return []byte("inactive"), errors.New("exit status 3")
			}
			_, err := b.Apply(t.Context(), []lb.Service{nginx()}, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Apply error = %v, want error %v", err, tt.wantErr)
			}
			if d := cmp.Diff(tt.wantRun, ran); d != "" {
				t.Errorf("commands run (-want +got):\n%s", d)
			}
			if !tt.wantErr && len(onDisk(t, b)) != 1 {
				t.Errorf("files on disk: %v, want the service's file", onDisk(t, b).Names())
			}
		})
	}
}

// TestCheckConfigNamesTheServiceFile: the set is validated as one file, but
// an error points at the service file and line an operator would open.
// checkingBackend returns a Backend whose base file exists, for tests of
// checkConfig with the real "haproxy -c" (skipped without haproxy).
func checkingBackend(t *testing.T) (*Backend, Options) {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skipf("SKIP: haproxy is not installed: %v", err)
	}
	o := testOptions(t.TempDir())
	o.User, o.Group = "-", "-"
	b := New(o, nil)
	if err := b.ensureBase(); err != nil {
		t.Fatal(err)
	}
	return b, o
}

func TestCheckConfigNamesTheServiceFile(t *testing.T) {
	b, o := checkingBackend(t)
	good, err := Render([]lb.Service{nginx()}, o)
	if err != nil {
		t.Fatal(err)
	}
	files := Files{"default_broken.cfg": []byte("backend lbd_broken\n    mode tcp\n    bnd 1.2.3.4:80\n")}
	for n, f := range good {
		files[n] = f
	}
	files["zz_last.cfg"] = []byte("backend lbd_last\n    mode tcp") // no final newline
	gen := filepath.Join(t.TempDir(), "gen")
	os.Mkdir(gen, 0o755)
	err = b.checkConfig(t.Context(), o.BasePath, gen, files)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("checkConfig = %v, want a *ConfigError", err)
	}
	want := filepath.Join(o.Dir, "default_broken.cfg") + ":3"
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), ".validate-") {
		t.Errorf("error %q does not point at %s", err, want)
	}
	delete(files, "default_broken.cfg")
	if err := b.checkConfig(t.Context(), o.BasePath, gen, files); err != nil {
		t.Errorf("valid set rejected: %v", err)
	}
}

func TestReloadsCounted(t *testing.T) {
	b, c := fakeBackend(t, false)
	ctx := context.Background()
	svc := nginx()
	for i, want := range []uint64{1, 1} { // the second Apply changes nothing
		if _, err := b.Apply(ctx, []lb.Service{svc}, nil); err != nil {
			t.Fatal(err)
		}
		if got := b.Reloads(); got != want {
			t.Errorf("Apply %d: Reloads() = %d, want %d", i, got, want)
		}
	}
	c.reloadErr = errors.New("no new worker")
	svc.Ports[0].Endpoints = svc.Ports[0].Endpoints[:1]
	if _, err := b.Apply(ctx, []lb.Service{svc}, nil); err == nil {
		t.Fatal("Apply with a failing reload succeeded")
	}
	if got := b.Reloads(); got != 1 {
		t.Errorf("a failed reload was counted: Reloads() = %d, want 1", got)
	}
}

// bindAnything is a bind test for Backends that run outside the network
// namespace whose addresses haproxy binds.
func bindAnything() func(netip.Addr) error { return func(netip.Addr) error { return nil } }

// TestUnbindableAddressIsSkipped: a service on an address this host lacks
// would make every reload fail; it is skipped by name, keeps its previous
// file, and the other services still get through.
func TestUnbindableAddressIsSkipped(t *testing.T) {
	b, c := fakeBackend(t, true)
	ctx := context.Background()
	good, moved := nginx(), nginx()
	good.Name = "good"
	good.Normalize()
	foreign := netip.MustParseAddr("192.0.2.55")
	b.bindable = func() func(netip.Addr) error {
		return func(ip netip.Addr) error {
			if ip == foreign {
				return errors.New("not an address of this host")
			}
			return nil
		}
	}
	if _, err := b.Apply(ctx, []lb.Service{moved}, nil); err != nil {
		t.Fatal(err)
	}
	before := onDisk(t, b)[FileName(moved.Namespace, moved.Name)]
	moved.ExternalIPs = []netip.Addr{foreign}
	skipped, err := b.Apply(ctx, []lb.Service{good, moved}, nil)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(skipped) != 1 || skipped[0].Key != moved.Key() || !strings.Contains(skipped[0].Reason, "192.0.2.55") {
		t.Errorf("skipped = %+v, want %s by name with its address", skipped, moved.Key())
	}
	files := onDisk(t, b)
	if string(files[FileName(moved.Namespace, moved.Name)]) != string(before) {
		t.Error("the skipped service's file changed")
	}
	if _, ok := files[FileName(good.Namespace, good.Name)]; !ok || c.reloads != 2 {
		t.Errorf("the other service was not published (files %v, reloads %d)", files.Names(), c.reloads)
	}
}

// TestLocalBind checks the real bind test against this host.
func TestLocalBind(t *testing.T) {
	canBind := localBind()
	if err := canBind(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("127.0.0.1: %v", err)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); strings.TrimSpace(string(b)) == "0" {
		if err := canBind(netip.MustParseAddr("192.0.2.55")); err == nil || !strings.Contains(err.Error(), "ip_nonlocal_bind") {
			t.Errorf("192.0.2.55 (TEST-NET, on no interface): %v, want a refusal naming ip_nonlocal_bind", err)
		}
	}
}

// TestApplyTrustsWhatItWrote: once a Backend has read or written the
// services directory, Apply works from what it knows and reads no file
// (at 10,000 services the reads cost more than the change), until Verify
// finds drift or a pass fails; then the next Apply reads the directory
// and repairs it.
func TestApplyTrustsWhatItWrote(t *testing.T) {
	ctx := context.Background()
	b, c := fakeBackend(t, false)
	web, other := nginx(), nginx()
	other.Name = "other"
	applied := []lb.Service{web, other}
	if _, err := b.Apply(ctx, applied, nil); err != nil {
		t.Fatal(err)
	}
	want := onDisk(t, b)
	for name := range want {
		os.Remove(filepath.Join(b.o.Dir, name)) // behind lbd's back
	}
	checks, reloads := c.checks, c.reloads
	if _, err := b.Apply(ctx, applied, nil); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(t, b); len(got) != 0 || c.checks != checks || c.reloads != reloads {
		t.Errorf("an unchanged Apply read the directory: files %v, checks %d->%d, reloads %d->%d; want it to trust what it wrote",
			got.Names(), checks, c.checks, reloads, c.reloads)
	}
	drift, err := b.Verify(ctx, applied)
	if err != nil || len(drift) == 0 {
		t.Fatalf("Verify = %q, %v; want the missing files", drift, err)
	}
	if _, err := b.Apply(ctx, applied, nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, onDisk(t, b)); diff != "" {
		t.Errorf("Apply after Verify's drift did not repair (-want +got):\n%s", diff)
	}

	// A failed pass drops the trust too.
	changed := nginx()
	changed.Ports[0].Port = 8080 // structural: validated and reloaded
	c.checkErr = errors.New("test: haproxy -c fails")
	if _, err := b.Apply(ctx, []lb.Service{changed, other}, nil); err == nil {
		t.Fatal("Apply with a failing check succeeded")
	}
	c.checkErr = nil
	if b.known != nil {
		t.Errorf("after a failed Apply the Backend still trusts its memory")
	}
}
