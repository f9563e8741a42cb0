package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// K8sVersion is the Kubernetes version of the lab's kube-apiserver and
// kubectl, built by hack/k8s/build.sh into hack/.bin/k8s-<version>/.
const K8sVersion = "v1.32.13"

// Ports inside the master namespace. etcd listens on its loopback only;
// the others on MasterIP.
const (
	etcdClientPort  = 12379
	etcdPeerPort    = 12380
	etcdMetricsPort = 12381
	apiserverPort   = 6443
	sshPort         = 22
)

// startCluster starts etcd, kube-apiserver and sshd in the master
// namespace, in that order, each waited for before the next.
func (l *Lab) startCluster(ctx context.Context) error {
	bin, err := k8sBinaries(ctx)
	if err != nil {
		return err
	}
	l.kubectl = filepath.Join(bin, "kubectl")
	cdir := filepath.Join(l.Dir, "cluster")
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return err
	}
	token, err := randomHex(16)
	if err != nil {
		return err
	}
	if err := writeServiceAccountKey(cdir); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cdir, "tokens.csv"), []byte(token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return err
	}
	if err := l.startEtcd(ctx, cdir); err != nil {
		return err
	}
	if err := l.startAPIServer(ctx, bin, cdir, token); err != nil {
		return err
	}
	if err := l.writeSSHFiles(ctx); err != nil {
		return err
	}
	return l.StartSSHD(ctx)
}

// k8sBinaries returns the directory holding kube-apiserver and kubectl,
// running hack/k8s/build.sh first when they are missing (minutes, once;
// the script takes a lock so concurrent labs build only once).
func k8sBinaries(ctx context.Context) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "hack", ".bin", "k8s-"+K8sVersion)
	if isExec(filepath.Join(dir, "kube-apiserver")) && isExec(filepath.Join(dir, "kubectl")) {
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "k8s", "build.sh"))
	if _, err := runCmd(ctx, cmd); err != nil {
		return "", fmt.Errorf("build kubernetes binaries: %w", err)
	}
	return dir, nil
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeServiceAccountKey writes sa.key and sa.pub, an ECDSA P-256 pair the
// apiserver signs and checks service-account tokens with (fast to make,
// unlike RSA).
func writeServiceAccountKey(dir string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("service account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return fmt.Errorf("service account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return fmt.Errorf("service account key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func (l *Lab) startEtcd(ctx context.Context, cdir string) error {
	u := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
	p, err := l.startProc("etcd", l.MasterNS, "/usr/bin/etcd",
		"--name", "lab",
		"--data-dir", filepath.Join(cdir, "etcd"),
		"--listen-client-urls", u(etcdClientPort),
		"--advertise-client-urls", u(etcdClientPort),
		"--listen-peer-urls", u(etcdPeerPort),
		"--initial-advertise-peer-urls", u(etcdPeerPort),
		"--initial-cluster", "lab="+u(etcdPeerPort),
		"--listen-metrics-urls", u(etcdMetricsPort),
	)
	if err != nil {
		return err
	}
	hc := l.HTTPClient(l.MasterNS)
	return waitReady(ctx, p, 30*time.Second, "etcd", func(ctx context.Context) error {
		return httpOK(ctx, hc, u(etcdClientPort)+"/health", "")
	})
}

func (l *Lab) startAPIServer(ctx context.Context, bin, cdir, token string) error {
	certs := filepath.Join(cdir, "certs")
	addr := l.MasterIP.String()
	authz := "AlwaysAllow"
	if l.rbac {
		authz = "Node,RBAC"
	}
	p, err := l.startProc("kube-apiserver", l.MasterNS, filepath.Join(bin, "kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClientPort),
		"--bind-address="+addr,
		"--advertise-address="+addr,
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--cert-dir="+certs,
		"--token-auth-file="+filepath.Join(cdir, "tokens.csv"),
		"--authorization-mode="+authz,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(cdir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(cdir, "sa.key"),
		"--service-cluster-ip-range=10.247.0.0/16",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	// The serving certificate does not exist before the apiserver makes
	// it, so /readyz is polled without verification; kubectl below then
	// verifies TLS against that certificate.
	hc := l.HTTPClient(l.MasterNS)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	server := "https://" + netip.AddrPortFrom(l.MasterIP, apiserverPort).String()
	if err := waitReady(ctx, p, 90*time.Second, "kube-apiserver", func(ctx context.Context) error {
		return httpOK(ctx, hc, server+"/readyz", token)
	}); err != nil {
		return err
	}

	l.Kubeconfig = filepath.Join(l.Dir, "kubeconfig")
	if err := os.WriteFile(l.Kubeconfig, []byte(kubeconfig(server, filepath.Join(certs, "apiserver.crt"), token)), 0o600); err != nil {
		return err
	}
	l.KubectlRemote = strings.Join(l.kubectlArgs(), " ")
	return waitReady(ctx, p, 30*time.Second, "kubectl get ns default", func(ctx context.Context) error {
		_, err := l.Kubectl(ctx, "", "get", "ns", "default")
		return err
	})
}

// kubeconfig renders an admin kubeconfig for server, trusting caFile.
func kubeconfig(server, caFile, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: lab
  context:
    cluster: lab
    user: admin
current-context: lab
`, server, caFile, token)
}

func httpOK(ctx context.Context, hc *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// kubectlArgs is kubectl with the lab's kubeconfig and a discovery cache
// in Dir (not in root's home, which other labs share).
func (l *Lab) kubectlArgs() []string {
	return []string{l.kubectl, "--kubeconfig", l.Kubeconfig, "--cache-dir", filepath.Join(l.Dir, "kubecache")}
}

// Kubectl runs kubectl in the master namespace with the lab's kubeconfig,
// directly, not over SSH: it is how tests create and change objects. stdin
// is fed to kubectl when not empty. It returns stdout; the error holds
// stderr.
func (l *Lab) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	if l.Kubeconfig == "" {
		return "", fmt.Errorf("lab %s: kubectl: not a cluster lab", l.Name)
	}
	a := append(l.kubectlArgs(), args...)
	cmd := l.Command(ctx, l.MasterNS, a[0], a[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Apply runs `kubectl apply -f -` with manifest (YAML or JSON, one or more
// documents).
func (l *Lab) Apply(ctx context.Context, manifest string) error {
	if _, err := l.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("lab %s: apply: %w", l.Name, err)
	}
	return nil
}

// writeSSHFiles makes the master's host key, the test client key, the
// authorized_keys, known_hosts and sshd_config, all in Dir/ssh.
func (l *Lab) writeSSHFiles(ctx context.Context) error {
	dir := filepath.Join(l.Dir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	l.SSHKey = filepath.Join(dir, "id_ed25519")
	for _, k := range []struct{ path, comment string }{{hostKey, "lbd-lab-host"}, {l.SSHKey, "lbd-lab-client"}} {
		cmd := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", k.comment, "-f", k.path)
		if _, err := runCmd(ctx, cmd); err != nil {
			return fmt.Errorf("ssh keys: %w", err)
		}
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return err
	}
	clientPub, err := os.ReadFile(l.SSHKey + ".pub")
	if err != nil {
		return err
	}
	// Port 22 needs no "[host]:port" form in known_hosts.
	f := strings.Fields(string(hostPub))
	if len(f) < 2 {
		return fmt.Errorf("ssh host key %s.pub: unexpected %q", hostKey, hostPub)
	}
	l.KnownHosts = filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(l.KnownHosts, []byte(l.MasterIP.String()+" "+f[0]+" "+f[1]+"\n"), 0o644); err != nil {
		return err
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, clientPub, 0o600); err != nil {
		return err
	}
	l.Master = "root@" + netip.AddrPortFrom(l.MasterIP, sshPort).String()
	conf := fmt.Sprintf(`# sshd for the lbd lab's master; written by hack/lab.
ListenAddress %s
Port %d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
`, l.MasterIP, sshPort, hostKey, filepath.Join(l.Dir, "run", "sshd.sshd-pid"), authorized)
	return os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o644)
}

// AddAuthorizedKey makes a new client key pair Dir/ssh/id_<name> and
// appends its public half to the master's authorized_keys, after options
// when they are not empty (for example
// `restrict,pty,command="/usr/local/bin/lbd-remote"`), so that root on the
// master accepts it on the terms the options set. sshd reads
// authorized_keys at each login: the key works at once. It returns the
// private key's path. name is [a-z0-9-] (cluster labs only).
func (l *Lab) AddAuthorizedKey(ctx context.Context, name, options string) (string, error) {
	if !keyNameRE.MatchString(name) {
		return "", fmt.Errorf("lab %s: add authorized key %q: want 1-32 of [a-z0-9-]", l.Name, name)
	}
	if strings.ContainsAny(options, "\n\r") {
		return "", fmt.Errorf("lab %s: add authorized key %s: options contain a newline", l.Name, name)
	}
	dir := filepath.Join(l.Dir, "ssh")
	authorized := filepath.Join(dir, "authorized_keys")
	if _, err := os.Stat(authorized); err != nil {
		return "", fmt.Errorf("lab %s: add authorized key %s: not a cluster lab: %w", l.Name, name, err)
	}
	key := filepath.Join(dir, "id_"+name)
	cmd := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lbd-lab-"+name, "-f", key)
	if _, err := runCmd(ctx, cmd); err != nil {
		return "", fmt.Errorf("lab %s: add authorized key %s: %w", l.Name, name, err)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return "", fmt.Errorf("lab %s: add authorized key %s: %w", l.Name, name, err)
	}
	line := strings.TrimSpace(string(pub))
	if options != "" {
		line = options + " " + line
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(authorized, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("lab %s: add authorized key %s: %w", l.Name, name, err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("lab %s: add authorized key %s: %w", l.Name, name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("lab %s: add authorized key %s: %w", l.Name, name, err)
	}
	return key, nil
}

var keyNameRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// StartSSHD starts sshd in the master namespace, with the same host key as
// before, and waits until it accepts connections on 10.245.1.10:22.
func (l *Lab) StartSSHD(ctx context.Context) error {
	conf := filepath.Join(l.Dir, "ssh", "sshd_config")
	if _, err := os.Stat(conf); err != nil {
		return fmt.Errorf("lab %s: start sshd: not a cluster lab: %w", l.Name, err)
	}
	// sshd refuses to run without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return fmt.Errorf("lab %s: start sshd: %w", l.Name, err)
	}
	home, err := rootHome()
	if err != nil {
		return fmt.Errorf("lab %s: start sshd: %w", l.Name, err)
	}
	// Sessions run root's login shell, which reads root's dotfiles: the
	// host's, with whatever they do (a pyenv rehash that waits on a lock
	// left by a killed session made every kubectl over SSH hang for a
	// minute). `ip netns exec` gives sshd a mount namespace of its own
	// whose mounts do not reach the host, so an empty tmpfs over root's
	// home there makes the master's login environment the lab's.
	script := `mount -t tmpfs -o mode=0700,size=16m lbd-lab-home "$1" && exec /usr/sbin/sshd -D -e -f "$2"`
	p, err := l.startProc("sshd", l.MasterNS, "/bin/sh", "-c", script, "sh", home, conf)
	if err != nil {
		return fmt.Errorf("lab %s: %w", l.Name, err)
	}
	addr := netip.AddrPortFrom(l.MasterIP, sshPort).String()
	err = waitReady(ctx, p, 15*time.Second, "sshd", func(ctx context.Context) error {
		c, err := l.Dial(ctx, l.MasterNS, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		banner := make([]byte, 4)
		if _, err := io.ReadFull(c, banner); err != nil {
			return fmt.Errorf("ssh banner: %w", err)
		}
		if string(banner) != "SSH-" {
			return fmt.Errorf("ssh banner: got %q", banner)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("lab %s: %w", l.Name, err)
	}
	return nil
}

// rootHome is root's home directory, where sshd starts root's sessions.
func rootHome() (string, error) {
	u, err := user.LookupId("0")
	if err != nil {
		return "", fmt.Errorf("root's home: %w", err)
	}
	if !filepath.IsAbs(u.HomeDir) || u.HomeDir == "/" {
		return "", fmt.Errorf("root's home %q: want an absolute path below /", u.HomeDir)
	}
	return u.HomeDir, nil
}

// StopSSHD kills the master's sshd (its process group), so lbd's SSH
// connections fail as when the master's sshd is down. Sessions already open
// are cut as well. StartSSHD brings it back with the same host key.
func (l *Lab) StopSSHD() error {
	l.mu.Lock()
	p := l.procs["sshd"]
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("lab %s: stop sshd: not running", l.Name)
	}
	if err := p.stop(); err != nil {
		return fmt.Errorf("lab %s: stop sshd: %w", l.Name, err)
	}
	if err := l.killSessions(); err != nil {
		return fmt.Errorf("lab %s: stop sshd: %w", l.Name, err)
	}
	return nil
}

// killSessions kills what sshd sessions left in the master namespace: the
// per-connection sshd processes and the commands they ran. sshd puts each
// connection in its own session, out of reach of the listener's process
// group, and a command whose sshd died lives on under init. Every process
// in the namespace that the lab did not start itself goes.
func (l *Lab) killSessions() error {
	out, err := exec.Command("ip", "netns", "pids", l.MasterNS).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns pids %s: %w: %s", l.MasterNS, err, out)
	}
	own := map[int]bool{}
	l.mu.Lock()
	for _, p := range l.procs {
		if !p.exited() {
			own[p.cmd.Process.Pid] = true
		}
	}
	l.mu.Unlock()
	for _, s := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(s)
		if err == nil && pid > 1 && !own[pid] && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}
