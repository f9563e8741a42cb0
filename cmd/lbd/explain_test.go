package main

import (
	"net/netip"
	"testing"

	"github.com/lbd/lbd/lb"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in    string
		addr  string
		port  uint16
		proto lb.Protocol
		err   bool
	}{
		{in: "192.168.121.240:80", addr: "192.168.121.240", port: 80},
		{in: "192.168.121.240:80/TCP", addr: "192.168.121.240", port: 80, proto: lb.TCP},
		{in: "192.168.121.240:53/udp", addr: "192.168.121.240", port: 53, proto: lb.UDP},
		{in: "192.168.121.240:9/sctp", addr: "192.168.121.240", port: 9, proto: lb.SCTP},
		{in: "[fd00::1]:443/tcp", addr: "fd00::1", port: 443, proto: lb.TCP},
		{in: "[::ffff:192.168.121.240]:80", addr: "192.168.121.240", port: 80},
		{in: "192.168.121.240", err: true},
		{in: "192.168.121.240:0", err: true},
		{in: "192.168.121.240:70000", err: true},
		{in: "192.168.121.240:80/icmp", err: true},
		{in: "fd00::1:80", err: true},
		{in: "web:80", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		addr, port, proto, err := parseTarget(tt.in)
		if tt.err {
			if err == nil {
				t.Errorf("parseTarget(%q) = %v %d %q, want an error", tt.in, addr, port, proto)
			}
			continue
		}
		if err != nil || addr != netip.MustParseAddr(tt.addr) || port != tt.port || proto != tt.proto {
			t.Errorf("parseTarget(%q) = %v %d %q %v, want %s %d %q", tt.in, addr, port, proto, err, tt.addr, tt.port, tt.proto)
		}
	}
}
