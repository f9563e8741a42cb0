package keepalived

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// Defaults for [Options]; the zero value of a field means its default.
const (
	DefaultConfigPath   = "/etc/keepalived/lbd.conf"
	DefaultNotifyScript = "/etc/keepalived/lbd-notify.sh"
	DefaultTrackFile    = "/run/lbd/ha-health"
	DefaultStateFile    = "/run/lbd/ha-state"
	DefaultPIDFile      = "/run/keepalived.pid"
	DefaultKeepalived   = "keepalived"
	DefaultPriority     = 100
	DefaultAdvertInt    = time.Second
	// InstanceName is the name of the one vrrp_instance lbd renders; the
	// notify hook and keepalived's logs use it.
	InstanceName = "lbd"
	// TrackName is the name of the track_file block lbd renders.
	TrackName = "lbd_health"
)

// Options configure the HA pair on one LB. Both LBs of a pair use the same
// Interface name, RouterID, AdvertInt and Addresses; each has its own
// SourceIP, Peers (the other LB) and usually its own Priority.
type Options struct {
	// Interface carries the VRRP adverts and the addresses: the
	// client-side link (--ha-interface).
	Interface string
	// Peers are the other LBs' addresses on Interface; adverts go to them
	// by unicast (--ha-peer, repeatable). They decide the instance's
	// address family.
	Peers []netip.Addr
	// SourceIP is this LB's address on Interface (unicast_src_ip). Unset
	// means keepalived's choice, the interface's primary address.
	SourceIP netip.Addr
	// Priority is this LB's VRRP priority, 1..254 (--ha-priority); 255
	// is reserved for an address owner, which an LB never is.
	Priority int
	// AdvertInt is the advert interval (--ha-advert-int): a multiple of
	// 10ms between 10ms and 40.95s (VRRPv3 counts centiseconds). The
	// backup takes over after about 3×AdvertInt plus a skew below one
	// AdvertInt.
	AdvertInt time.Duration
	// RouterID is the VRRP virtual router id, 1..255, the same on both LBs
	// and unique on the segment (--ha-router-id). It has no default:
	// two pairs with the same id on one link steal each other's adverts.
	RouterID int
	// Preempt lets a recovered LB with the higher priority take the
	// addresses back. The default, false, renders nopreempt, so a recovery
	// does not cause a second interruption.
	Preempt bool
	// TrackFile is the health file lbd writes and keepalived tracks:
	// 0 healthy, anything else fault.
	TrackFile string
	// NotifyScript is where the transition hook ([NotifyScript]) lives;
	// [Keepalived.Apply] writes it.
	NotifyScript string
	// StateFile is where the hook writes the VRRP state (MASTER, BACKUP,
	// FAULT or STOP).
	StateFile string
	// ConntrackdConfig, when set, makes the hook drive conntrackd with
	// this configuration (see [RenderConntrackd]); empty means no
	// conntrackd.
	ConntrackdConfig string
	// Addresses are every address lbd serves; keepalived adds them (/32,
	// /128) on the master. They are usually left empty here and passed
	// to [Keepalived.Apply].
	Addresses []netip.Addr
	// PodAddresses float on PodInterface with the served addresses: the
	// addresses the iptables backend SNATs to (--snat-addresses). A flow
	// keeps its SNAT address when conntrackd moves it to the other LB, so
	// the pods' replies reach the new master only if that address moved
	// too. Any family; empty means none.
	PodAddresses []netip.Addr
	// PodInterface is the pod-side link PodAddresses go to
	// (--pod-interface); required with PodAddresses.
	PodInterface string
	// ConfigPath is the include file lbd owns.
	ConfigPath string
	// PIDFile is keepalived's main pid file; the reload signals that pid.
	PIDFile string
	// KeepalivedBin is the keepalived binary for the config test.
	KeepalivedBin string
}

// WithDefaults returns o with every unset field set to its default.
func (o Options) WithDefaults() Options {
	set := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	set(&o.ConfigPath, DefaultConfigPath)
	set(&o.NotifyScript, DefaultNotifyScript)
	set(&o.TrackFile, DefaultTrackFile)
	set(&o.StateFile, DefaultStateFile)
	set(&o.PIDFile, DefaultPIDFile)
	set(&o.KeepalivedBin, DefaultKeepalived)
	if o.Priority == 0 {
		o.Priority = DefaultPriority
	}
	if o.AdvertInt == 0 {
		o.AdvertInt = DefaultAdvertInt
	}
	return o
}

// ErrInvalid is wrapped by every error of [Options.Validate].
var ErrInvalid = errors.New("invalid HA option")

// Validate checks o after defaults are applied (call WithDefaults first)
// and names the flag of the first bad setting. Addresses are not checked
// here: they are lbd's own, validated at the border.
func (o Options) Validate() error {
	bad := func(flag, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", flag, fmt.Sprintf(format, args...), ErrInvalid)
	}
	if o.Interface == "" {
		return bad("--ha-interface", "required with --ha=keepalived")
	}
	if len(o.Interface) > 15 || strings.ContainsAny(o.Interface, "/ \t\n\"'{}!#") || o.Interface == "." || o.Interface == ".." {
		return bad("--ha-interface", "%q is not an interface name", o.Interface)
	}
	if len(o.PodAddresses) > 0 && (o.PodInterface == "" || len(o.PodInterface) > 15 || strings.ContainsAny(o.PodInterface, "/ \t\n\"'{}!#")) {
		return bad("--pod-interface", "%q is not an interface name (the SNAT addresses float on it)", o.PodInterface)
	}
	if len(o.Peers) == 0 {
		return bad("--ha-peer", "at least one peer is required (the other LB's address on %s)", o.Interface)
	}
	family := o.Peers[0].Is4()
	seen := map[netip.Addr]bool{}
	for _, p := range o.Peers {
		switch {
		case !p.IsValid() || p.IsUnspecified() || p.IsMulticast():
			return bad("--ha-peer", "%v is not a unicast address", p)
		case p.Is4In6():
			return bad("--ha-peer", "%v: write IPv4 addresses as a.b.c.d", p)
		case p.Is4() != family:
			return bad("--ha-peer", "%v and %v: all peers must be of one address family", o.Peers[0], p)
		case seen[p]:
			return bad("--ha-peer", "%v given twice", p)
		case p == o.SourceIP:
			return bad("--ha-peer", "%v is this LB's own address (--ha-source)", p)
		}
		seen[p] = true
	}
	if o.SourceIP.IsValid() && o.SourceIP.Is4() != family {
		return bad("--ha-source", "%v is not of the peers' address family", o.SourceIP)
	}
	if o.Priority < 1 || o.Priority > 254 {
		return bad("--ha-priority", "%d is outside 1..254", o.Priority)
	}
	if o.AdvertInt < 10*time.Millisecond || o.AdvertInt > 4095*10*time.Millisecond || o.AdvertInt%(10*time.Millisecond) != 0 {
		return bad("--ha-advert-int", "%v is not a multiple of 10ms between 10ms and 40.95s", o.AdvertInt)
	}
	if o.RouterID < 1 || o.RouterID > 255 {
		if o.RouterID == 0 {
			return bad("--ha-router-id", "required (1..255, the same on both LBs, unique on the link)")
		}
		return bad("--ha-router-id", "%d is outside 1..255", o.RouterID)
	}
	for _, p := range []struct{ flag, path string }{
		{"--ha-track-file", o.TrackFile},
		{"--ha-notify-script", o.NotifyScript},
		{"--ha-state-file", o.StateFile},
		{"--ha-config", o.ConfigPath},
		{"--ha-pid-file", o.PIDFile},
		{"--ha-conntrackd-config", o.ConntrackdConfig},
	} {
		if p.path == "" && p.flag == "--ha-conntrackd-config" {
			continue
		}
		// keepalived splits a notify command on blanks and has no escape.
		if !filepath.IsAbs(p.path) || strings.ContainsAny(p.path, " \t\n\"'\\") {
			return bad(p.flag, "%q must be an absolute path without blanks or quotes", p.path)
		}
	}
	return nil
}
