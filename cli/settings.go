package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// KeyFiles returns --ssh-key split on commas, blanks dropped; nil lets
// discovery use the usual keys in ~/.ssh.
func (c Config) KeyFiles() []string {
	var out []string
	for _, k := range strings.Split(c.SSHKeys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// HAAddrs are the addresses of --ha-peer and --ha-source, parsed.
type HAAddrs struct {
	Peers []netip.Addr
	// Source is invalid (the zero Addr) without --ha-source.
	Source netip.Addr
}

// Keepalived checks the --ha flags without I/O and returns the HA
// addresses with --ha=keepalived, nil with --ha=none (or empty). Each
// error names its flag. keepalived's own checks of its options come
// after, in keepalived.
func (c Config) Keepalived() (*HAAddrs, error) {
	switch c.HA {
	case "", "none":
		return nil, nil
	case "keepalived":
	default:
		return nil, fmt.Errorf("--ha %q: want none or keepalived", c.HA)
	}
	if c.VIPInterface != "" {
		return nil, errors.New("--vip-interface with --ha=keepalived: keepalived owns and announces the addresses; leave --vip-interface empty")
	}
	h := &HAAddrs{}
	for _, p := range c.HAPeers {
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--ha-peer %q: not an IP address", p)
		}
		h.Peers = append(h.Peers, ip)
	}
	if c.HASource != "" {
		ip, err := netip.ParseAddr(c.HASource)
		if err != nil {
			return nil, fmt.Errorf("--ha-source %q: not an IP address", c.HASource)
		}
		h.Source = ip
	}
	return h, nil
}

// UseLastBackend makes last, the backend of the last sync, the one plan,
// status and explain look at, unless --backend (or LBD_BACKEND) was given
// or last is empty. It returns the line that says so, or "".
func (c *Config) UseLastBackend(last string) (note string) {
	if c.Given["backend"] || last == "" {
		return ""
	}
	c.Backend = last
	return fmt.Sprintf("backend: %s (of the last sync)", last)
}
