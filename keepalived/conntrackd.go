package keepalived

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// Defaults for [ConntrackdOptions].
const (
	DefaultConntrackdConfig = "/etc/conntrackd/conntrackd.conf"
	DefaultSyncPort         = 3780
	DefaultConntrackdSocket = "/var/run/conntrackd.sock"
	DefaultConntrackdLock   = "/var/lock/conntrackd.lock"
	DefaultConntrackdLog    = "/var/log/conntrackd.log"
)

// ConntrackdOptions configure conntrackd's flow sync between the two LBs:
// FTFW mode (reliable, acknowledged) over UDP on a dedicated link.
type ConntrackdOptions struct {
	// Interface is the dedicated sync link (--ha-sync-interface).
	Interface string
	// Local is this LB's address on Interface (--ha-sync-local); Peer is
	// the other LB's (--ha-sync-peer). Both of one family.
	Local, Peer netip.Addr
	// Port is the UDP port on both ends (default 3780).
	Port uint16
	// SocketPath is conntrackd's control socket, which the notify hook's
	// client commands use; LockFile its lock; LogFile its log.
	SocketPath, LockFile, LogFile string
	// Systemd turns on sd_notify, for Debian's Type=notify unit.
	Systemd bool
}

// WithDefaults returns o with every unset field set to its default.
func (o ConntrackdOptions) WithDefaults() ConntrackdOptions {
	if o.Port == 0 {
		o.Port = DefaultSyncPort
	}
	if o.SocketPath == "" {
		o.SocketPath = DefaultConntrackdSocket
	}
	if o.LockFile == "" {
		o.LockFile = DefaultConntrackdLock
	}
	if o.LogFile == "" {
		o.LogFile = DefaultConntrackdLog
	}
	return o
}

// Validate checks o after defaults, naming the flag of the first bad
// setting; its errors wrap [ErrInvalid].
func (o ConntrackdOptions) Validate() error {
	bad := func(flag, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", flag, fmt.Sprintf(format, args...), ErrInvalid)
	}
	if o.Interface == "" || len(o.Interface) > 15 || strings.ContainsAny(o.Interface, "/ \t\n\"'{}#") {
		return bad("--ha-sync-interface", "%q is not an interface name", o.Interface)
	}
	for _, a := range []struct {
		flag string
		a    netip.Addr
	}{{"--ha-sync-local", o.Local}, {"--ha-sync-peer", o.Peer}} {
		if !a.a.IsValid() || a.a.IsUnspecified() || a.a.IsMulticast() || a.a.Zone() != "" || a.a.Is4In6() {
			return bad(a.flag, "%v is not a unicast address", a.a)
		}
	}
	if o.Local.Is4() != o.Peer.Is4() {
		return bad("--ha-sync-peer", "%v is not of the family of --ha-sync-local %v", o.Peer, o.Local)
	}
	if o.Local == o.Peer {
		return bad("--ha-sync-peer", "%v is this LB's own address", o.Peer)
	}
	for _, p := range []string{o.SocketPath, o.LockFile, o.LogFile} {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, " \t\n\"'") {
			return bad("--ha-conntrackd-config", "%q must be an absolute path without blanks or quotes", p)
		}
	}
	return nil
}

// RenderConntrackd returns conntrackd.conf for o (defaults applied and
// validated). It is pure.
//
// Only loopback and the sync link's own addresses are ignored: unlike a
// firewall pair, whose own addresses carry no forwarded flows, the
// service addresses are exactly the destinations whose flows must move,
// so they must not be filtered out.
func RenderConntrackd(o ConntrackdOptions) []byte {
	fam, dst := "IPv4_address", "IPv4_Destination_Address"
	loop := "127.0.0.1"
	if o.Local.Is6() {
		fam, dst, loop = "IPv6_address", "IPv6_Destination_Address", "::1"
	}
	onOff := map[bool]string{true: "on", false: "off"}
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by lbd for the HA pair: flows sync over %s in FTFW mode.", o.Interface)
	p("Sync {")
	p("\tMode FTFW {")
	p("\t\t# the notify hook commits this cache when the LB becomes master")
	p("\t\tDisableExternalCache off")
	p("\t\tResendQueueSize 131072")
	p("\t\tCommitTimeout 180")
	p("\t\t# conntrackd -t, when the LB falls back, ages its flows out in 5s")
	p("\t\tPurgeTimeout 5")
	p("\t\tACKWindowSize 300")
	p("\t}")
	p("\tUDP {")
	p("\t\t%s %s", fam, o.Local)
	p("\t\t%s %s", dst, o.Peer)
	p("\t\tPort %d", o.Port)
	p("\t\tInterface %s", o.Interface)
	p("\t\tSndSocketBuffer 1249280")
	p("\t\tRcvSocketBuffer 1249280")
	p("\t\tChecksum on")
	p("\t}")
	p("}")
	p("General {")
	p("\tSystemd %s", onOff[o.Systemd])
	p("\tHashSize 32768")
	p("\tHashLimit 131072")
	p("\tLogFile %s", o.LogFile)
	p("\tSyslog off")
	p("\tLockFile %s", o.LockFile)
	p("\tUNIX {")
	p("\t\tPath %s", o.SocketPath)
	p("\t}")
	p("\tNetlinkBufferSize 2097152")
	p("\tNetlinkBufferSizeMaxGrowth 8388608")
	p("\tFilter From Userspace {")
	p("\t\tProtocol Accept {")
	p("\t\t\tTCP")
	p("\t\t\tUDP")
	p("\t\t\tSCTP")
	p("\t\t}")
	p("\t\tAddress Ignore {")
	p("\t\t\t%s %s", fam, loop)
	p("\t\t\t%s %s", fam, o.Local)
	p("\t\t\t%s %s", fam, o.Peer)
	p("\t\t}")
	p("\t}")
	p("}")
	return b.Bytes()
}

// WriteConntrackd writes RenderConntrackd(o) to path atomically when the
// bytes differ and reports whether they did. conntrackd reads its
// configuration only at start: restarting it is the caller's (or the
// operator's) step.
func WriteConntrackd(path string, o ConntrackdOptions) (bool, error) {
	changed, err := writeIfChanged(path, RenderConntrackd(o), 0o644, nil)
	if err != nil {
		return false, fmt.Errorf("conntrackd config: %w", err)
	}
	return changed, nil
}
