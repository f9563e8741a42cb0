package main

import "github.com/lbd/lbd/keepalived"

// haOptions turns the --ha-* flags into keepalived's options, checked;
// nil without --ha=keepalived. It does no I/O, so a bad flag fails before
// any.
func (a *app) haOptions() (*keepalived.Options, error) {
	c := a.cfg
	h, err := c.Keepalived()
	if h == nil || err != nil {
		return nil, err
	}
	o := keepalived.Options{Interface: c.HAInterface, Peers: h.Peers, SourceIP: h.Source, Priority: c.HAPriority, AdvertInt: c.HAAdvertInt,
		RouterID: c.HARouterID, Preempt: c.HAPreempt, ConntrackdConfig: c.HAConntrackd, ConfigPath: c.HAConfig,
		TrackFile: c.HATrackFile, NotifyScript: c.HANotify, StateFile: c.HAStateFile, PIDFile: c.HAPIDFile,
		// SNAT's addresses float with the served ones: conntrackd moves a
		// flow with its SNAT address, whose replies must reach the master.
		PodAddresses: c.SNATAddrs, PodInterface: c.PodInterface}.WithDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}
