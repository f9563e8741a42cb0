package haproxy

import (
	"os"
	"time"
)

// Defaults for [Options]. The base file's name is the one the design notes
// give; the master socket is the one Debian's haproxy unit passes with -S.
const (
	DefaultBasePath      = "/etc/haproxy/haproxy-global-default.cfg"
	DefaultDir           = "/etc/haproxy/services.d"
	DefaultMasterSocket  = "/run/haproxy-master.sock"
	DefaultStatsSocket   = "/run/haproxy/admin.sock"
	DefaultCheckInterval = 2 * time.Second
	DefaultFall          = 3
	DefaultRise          = 2
	DefaultHaproxyBin    = "haproxy"
	// BaseReloadTimeout and ReloadTimeoutPerFile make the reload timeout
	// when [Options.ReloadTimeout] is 0 (see [Options.ReloadTimeoutFor]).
	BaseReloadTimeout    = 10 * time.Second
	ReloadTimeoutPerFile = 2 * time.Millisecond
	DefaultHardStopAfter = 15 * time.Minute
	DefaultUser          = "haproxy"
	DefaultGroup         = "haproxy"
	// DefaultPeerAddr is where the local peer of the stick tables listens
	// (loopback: it only ever talks to the next haproxy process).
	DefaultPeerAddr = "127.0.0.1:10990"
)

// Options configure the haproxy backend. The zero value of every field
// means its default (see [DefaultOptions]).
type Options struct {
	// BasePath is the file holding haproxy's global and defaults sections.
	// lbd writes a sound default there when the file is absent and never
	// touches it otherwise.
	BasePath string
	// Dir is the services directory passed to haproxy with -f. It becomes
	// a symlink to the current generation directory, kept beside it in
	// "." + base(Dir) + ".lbd". lbd owns only the files it wrote there;
	// the operator's stay (see the package doc).
	Dir string
	// Reload says how haproxy is reloaded. Empty means automatic: the
	// master CLI's "reload" when MasterSocket exists, otherwise
	// "systemctl reload haproxy". Anything else is a command run with
	// /bin/sh -c. Whatever the mode, when MasterSocket exists the reload
	// is confirmed by a new worker appearing in the master's "show proc".
	Reload string
	// MasterSocket is the master CLI socket (haproxy -S).
	MasterSocket string
	// StatsSocket is the admin socket the default base file declares, with
	// "expose-fd listeners" so that a new process can take the listening
	// sockets over from the old one.
	StatsSocket string
	// CheckInterval, Fall and Rise are the health-check parameters of every
	// server: "check inter CheckInterval fall Fall rise Rise".
	CheckInterval time.Duration
	Fall, Rise    int
	// HaproxyBin is the haproxy binary used for "haproxy -c".
	HaproxyBin string
	// ReloadTimeout bounds the wait for the new worker after a reload; 0
	// means it scales with the configuration (see [Options.ReloadTimeoutFor]).
	// A reload that times out is not rolled back: haproxy may still be
	// reading the files (see [ReloadError.Pending]). The CLI flag is
	// --haproxy-reload-timeout.
	ReloadTimeout time.Duration
	// HardStopAfter is written into the default base file: the longest an
	// old worker keeps serving its connections after a reload.
	HardStopAfter time.Duration
	// User and Group are written into the default base file; the workers
	// drop to them. "-" means stay root (for systems without the haproxy
	// user).
	User, Group string
	// PeerName is the name of the local peer in the peers section that
	// keeps ClientIP affinity's stick tables across reloads. It must be
	// haproxy's local peer name: the host name unless haproxy is started
	// with -L or has "localpeer" in its global section. Empty means this
	// host's name (os.Hostname).
	PeerName string
	// PeerAddr is the local peer's address, a loopback ip:port haproxy
	// binds (see [DefaultPeerAddr]).
	PeerAddr string
	// FilesPerService is the largest number of services that get a file
	// each (<namespace>_<name>.cfg); a larger set is written as Shards
	// shard files (see [ShardName]). Negative: never shard (haproxy 2.6
	// then refuses past about 2,500 services, see [ErrTooManyFiles]).
	FilesPerService int
	// Shards is the number of shard files of a sharded set.
	Shards int
}

// DefaultOptions returns the options with every default filled in; the CLI
// uses them as its flag defaults.
func DefaultOptions() Options { return Options{}.withDefaults() }

func (o Options) withDefaults() Options {
	set := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	set(&o.BasePath, DefaultBasePath)
	set(&o.Dir, DefaultDir)
	set(&o.MasterSocket, DefaultMasterSocket)
	set(&o.StatsSocket, DefaultStatsSocket)
	set(&o.HaproxyBin, DefaultHaproxyBin)
	set(&o.User, DefaultUser)
	set(&o.Group, DefaultGroup)
	set(&o.PeerAddr, DefaultPeerAddr)
	if o.PeerName == "" {
		o.PeerName, _ = os.Hostname()
	}
	set(&o.PeerName, "localhost")
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.Fall <= 0 {
		o.Fall = DefaultFall
	}
	if o.Rise <= 0 {
		o.Rise = DefaultRise
	}
	if o.ReloadTimeout < 0 {
		o.ReloadTimeout = 0
	}
	switch {
	case o.FilesPerService == 0:
		o.FilesPerService = DefaultFilesPerService
	case o.FilesPerService < 0:
		o.FilesPerService = int(^uint(0) >> 1)
	}
	if o.Shards <= 0 {
		o.Shards = DefaultShards
	}
	if o.HardStopAfter <= 0 {
		o.HardStopAfter = DefaultHardStopAfter
	}
	return o
}

// ReloadTimeoutFor returns how long a reload of a configuration of the
// given number of services may take before it counts as timed out:
// ReloadTimeout when set, otherwise [BaseReloadTimeout] + services ×
// [ReloadTimeoutPerFile] (10 s, 12 s at 1,000 services, 30 s at 10,000).
// It counts services, not the files on disk: haproxy 2.6 needs about
// 0.7 ms per file it opens to re-execute its master and load them (7 s
// for 10,000 small files on a 2-core machine), and past
// [Options.FilesPerService] the services share 256 shard files, which
// open faster but hold as many sections to parse; the default leaves a
// margin of three or more either way.
func (o Options) ReloadTimeoutFor(services int) time.Duration {
	if o.ReloadTimeout > 0 {
		return o.ReloadTimeout
	}
	return BaseReloadTimeout + time.Duration(services)*ReloadTimeoutPerFile
}
