package discovery

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// hasControl reports whether s holds a byte that a terminal acts on.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) })
}

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{`plain "text" with \ and ünïcode`, `plain "text" with \ and ünïcode`},
		{"two\nlines", `two\nlines`},
		{"\x1b[2J\x1b]0;title\x07", `\x1b[2J\x1b]0;title\a`},
		{"tab\tcr\r del\x7f", `tab\tcr\r del\x7f`},
		{"c1 \u0085 bidi \u202e", `c1 \u0085 bidi \u202e`},
		{"bad utf-8 \xff", `bad utf-8 \xff`},
	}
	for _, tt := range tests {
		if got := Printable(tt.in); got != tt.want {
			t.Errorf("Printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := Printable(Printable(tt.in)); got != tt.want {
			t.Errorf("Printable is not idempotent on %q: %q", tt.in, got)
		}
	}
}

func TestCommandErrorEscapesStderr(t *testing.T) {
	e := &CommandError{Host: "master:22", Command: "kubectl get", ExitStatus: 1, Stderr: "error: x\n\x1b[2Jlast sync: ok"}
	got := e.Error()
	if hasControl(got) {
		t.Errorf("Error() = %q holds control characters", got)
	}
	if want := `stderr: error: x\n\x1b[2Jlast sync: ok`; !strings.Contains(got, want) {
		t.Errorf("Error() = %q, want it to contain %q", got, want)
	}
}

// Raw cluster strings in a rejection are quoted unless they are valid
// names, so "lbd plan" and "lbd check" cannot print a forged line or an
// escape sequence.
func TestParseQuotesRawStrings(t *testing.T) {
	tests := []struct {
		name, in, wantField, wantReason string
	}{
		{
			name: "slice name",
			in: `{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"default","name":"web"},"spec":{"ports":[{"port":80}]}},` +
				`{"kind":"EndpointSlice","addressType":"IPv4","metadata":{"namespace":"default","name":"web-1\n\u001b[31mFAKE","labels":{"kubernetes.io/service-name":"web"}},"ports":[{"port":80}],"endpoints":[{"addresses":["10.0.0.300"]}]}]}`,
			wantField: `endpointslice "web-1\n\x1b[31mFAKE": endpoints[0].addresses[0]`,
		},
		{
			name: "slice name in a decode error",
			in: `{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"default","name":"web"},"spec":{"ports":[{"port":80}]}},` +
				`{"kind":"EndpointSlice","addressType":"IPv4","metadata":{"namespace":"default","name":"web-1\u001b[2J","labels":{"kubernetes.io/service-name":"web"}},"ports":[{"port":"80"}]}]}`,
			wantField: `endpointslice "web-1\x1b[2J": ports.port`,
		},
		{
			name: "endpoints name",
			in: `{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"default","name":"web\n"},"spec":{"ports":[{"port":80}]}},` +
				`{"kind":"Endpoints","metadata":{"namespace":"default","name":"web\n"},"subsets":[{"ports":[{"port":0}]}]}]}`,
			wantField: `endpoints "web\n": subsets[0].ports[0].port`,
		},
		{
			name: "raw targetPort",
			in: "{\"kind\":\"List\",\"items\":[{\"kind\":\"Service\",\"metadata\":{\"namespace\":\"default\",\"name\":\"web\"}," +
				"\"spec\":{\"ports\":[{\"port\":80,\"targetPort\":[1,\n\"\\u001b[2J\"]}]}}]}",
			wantField:  "spec.ports[0].targetPort",
			wantReason: `JSON "[1,\n\"\\u001b[2J\"]" is neither a number nor a string`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, invalid, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(invalid) != 1 {
				t.Fatalf("rejections %v, want one", invalid)
			}
			e := invalid[0]
			if d := cmp.Diff(tt.wantField, e.Field); d != "" {
				t.Errorf("field (-want +got):\n%s", d)
			}
			if tt.wantReason != "" && e.Reason != tt.wantReason {
				t.Errorf("reason %q, want %q", e.Reason, tt.wantReason)
			}
			if hasControl(e.Error()) {
				t.Errorf("rejection %q holds control characters", e.Error())
			}
		})
	}
}
