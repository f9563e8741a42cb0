package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/lbd/lbd/keepalived"
)

// haOptions turns the --ha-* flags into keepalived's options; nil without
// --ha=keepalived. It does no I/O, so a bad flag fails before any.
func (a *app) haOptions() (*keepalived.Options, error) {
	c := a.cfg
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
	o := keepalived.Options{Interface: c.HAInterface, Priority: c.HAPriority, AdvertInt: c.HAAdvertInt,
		RouterID: c.HARouterID, Preempt: c.HAPreempt, ConntrackdConfig: c.HAConntrackd, ConfigPath: c.HAConfig}
	for _, p := range c.HAPeers {
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--ha-peer %q: not an IP address", p)
		}
		o.Peers = append(o.Peers, ip)
	}
	if c.HASource != "" {
		ip, err := netip.ParseAddr(c.HASource)
		if err != nil {
			return nil, fmt.Errorf("--ha-source %q: not an IP address", c.HASource)
		}
		o.SourceIP = ip
	}
	o = o.WithDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}
