package haproxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

func svcWith(eps ...lb.Endpoint) lb.Service {
	s := nginx()
	s.Ports[0].Endpoints = eps
	s.Normalize()
	return s
}

// TestRuntimeOnly: endpoint changes keep the skeleton (runtime change);
// more endpoints than slots, a new port or affinity change it (reload).
// An endpoint keeps its slot when others come and go.
func TestRuntimeOnly(t *testing.T) {
	a, b2, c := ep("10.246.82.2", 80, true), ep("10.246.82.6", 80, true), ep("10.246.92.8", 80, true)
	term := lb.Endpoint{IP: ip("10.246.82.6"), Port: 80, Serving: true, Terminating: true}
	base := svcWith(a, b2, c)
	cur := rendered1(t, base)
	sticky := base
	sticky.Affinity, sticky.AffinityTimeout = lb.AffinityClientIP, 5e9
	many := svcWith(a, b2, c) // 8 slots: the ninth endpoint needs more
	for i := range 6 {
		many.Ports[0].Endpoints = append(many.Ports[0].Endpoints, ep(netip.AddrFrom4([4]byte{10, 246, 93, byte(i + 1)}).String(), 80, true))
	}
	many.Normalize()
	tests := []struct {
		name    string
		next    lb.Service
		runtime bool
	}{
		{"endpoint removed", svcWith(a, c), true},
		{"endpoint not ready", svcWith(a, ep("10.246.82.6", 80, false), c), true},
		{"endpoint terminating drains", svcWith(a, term, c), true},
		{"endpoint added", svcWith(a, b2, c, ep("10.246.92.9", 80, true)), true},
		{"slots exhausted", many, false},
		{"affinity changed", sticky, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, err := render([]lb.Service{tt.next}, Options{}, cur, nil)
			if err != nil {
				t.Fatal(err)
			}
			names, ok := runtimeOnly(cur, next)
			if ok != tt.runtime {
				t.Fatalf("runtimeOnly = %v %v, want %v\n%s", names, ok, tt.runtime, next["default_nginx.cfg"])
			}
			if !ok {
				return
			}
			_, before := parseSlots(cur["default_nginx.cfg"])
			_, after := parseSlots(next["default_nginx.cfg"])
			// Every endpoint still there keeps its slot.
			for i, s := range before["lbd_default_nginx_80_tcp"] {
				for j, n := range after["lbd_default_nginx_80_tcp"] {
					if n.state != slotFree && n.addr == s.addr && i != j {
						t.Errorf("endpoint %s moved from slot %d to %d", s.addr, i+1, j+1)
					}
				}
			}
		})
	}
	// A terminating endpoint drains ("weight 0"), except under ClientIP
	// affinity, whose stick table would still send its clients there.
	drain, _ := render([]lb.Service{svcWith(a, term, c)}, Options{}, cur, nil)
	_, sl := parseSlots(drain["default_nginx.cfg"])
	if got := sl["lbd_default_nginx_80_tcp"][1]; got.state != slotDrain || got.addr != netip.MustParseAddrPort("10.246.82.6:80") {
		t.Errorf("terminating endpoint in slot 2: %+v, want draining", got)
	}
	st := svcWith(a, term, c)
	st.Affinity, st.AffinityTimeout = lb.AffinityClientIP, 5e9
	f, _ := Render([]lb.Service{st}, Options{PeerName: "lb1"})
	_, sl = parseSlots(f["default_nginx.cfg"])
	for _, s := range sl["lbd_default_nginx_80_tcp"] {
		if s.addr.Addr() == ip("10.246.82.6") {
			t.Errorf("ClientIP service keeps the terminating endpoint: %+v", s)
		}
	}
}

func TestSlotCount(t *testing.T) {
	for _, tt := range []struct{ n, prev, want int }{
		{0, 0, 4}, {3, 0, 8}, {2, 0, 4}, {10, 0, 16}, {4, 4, 4}, {5, 4, 8}, {3, 8, 8}, {0, 8, 8}, {2, 16, 4}, {3, 16, 16}, {20, 16, 32},
	} {
		if got := slotCount(tt.n, tt.prev); got != tt.want {
			t.Errorf("slotCount(%d, %d) = %d, want %d", tt.n, tt.prev, got, tt.want)
		}
	}
}

func TestSlotCommands(t *testing.T) {
	a := netip.MustParseAddrPort("10.246.82.2:80")
	live := liveServer{addr: ip("10.246.82.2"), port: 80, uweight: 1}
	tests := []struct {
		name string
		want slot
		got  liveServer
		cmds []string
	}{
		{"ready as wanted", slot{slotReady, a}, live, nil},
		{"free slot filled", slot{slotReady, a}, liveServer{addr: ip("127.0.0.1"), port: 1, admin: admFMaint | 0x04, uweight: 1},
			[]string{"set server b/s1 addr 10.246.82.2 port 80", "set server b/s1 state ready"}},
		{"drained", slot{slotDrain, a}, live, []string{"set weight b/s1 0"}},
		{"freed", slot{state: slotFree}, live, []string{"set server b/s1 state maint"}},
		{"free as wanted", slot{state: slotFree}, liveServer{admin: 0x05}, nil},
		{"drain flag cleared", slot{slotReady, a}, liveServer{addr: ip("10.246.82.2"), port: 80, admin: admFDrain, uweight: 1}, []string{"set server b/s1 state ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.cmds, slotCommands("b", "s1", tt.want, tt.got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServersState(t *testing.T) {
	out := `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 b 1 s1 127.0.0.1 2 0 1 1 1 8 2 0 6 0 0 0 - 18081 - 0 0 - - 0
3 b 3 s3 127.0.0.1 0 5 1 1 1 1 0 0 14 0 0 0 - 1 - 0 0 - - 0
`
	got, err := parseServersState(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]liveServer{"b": {
		"s1": {addr: ip("127.0.0.1"), port: 18081, uweight: 1},
		"s3": {addr: ip("127.0.0.1"), port: 1, admin: 5, uweight: 1},
	}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(liveServer{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := parseServersState("Can't find backend.\n"); err == nil {
		t.Errorf("unknown backend: no error")
	}
}

func TestPeersReady(t *testing.T) {
	const fresh = `0x55fc19319d50: [07/Dec/2026:15:36:32] id=lbd disabled=0 flags=0x11 resync_timeout=3s task_calls=5
  0x55fc19319ec0: id=lbd-lab(local,inactive) addr=127.0.0.1:10990 last_status=NONE last_hdshk=<NEVER>
`
	tests := []struct {
		name, out string
		want      bool
	}{
		{"fresh worker, remote resync pending", fresh, false},
		{"gave up on both", strings.Replace(fresh, "0x11", "0x33", 1), true},
		{"taught by the old worker", strings.Replace(fresh, "0x11", "0x1103", 1), true},
		{"another section", strings.Replace(fresh, "id=lbd ", "id=other ", 1), true},
		{"no peers", "", true},
	}
	for _, tt := range tests {
		if got := peersReady(tt.out, PeersSection); got != tt.want {
			t.Errorf("%s: peersReady = %v, want %v", tt.name, got, tt.want)
		}
	}
}
