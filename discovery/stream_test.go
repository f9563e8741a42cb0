package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestParseListShapes: the streaming decoder reads a list as
// encoding/json would: keys in any case and order, the last of two wins,
// null items, other keys skipped.
func TestParseListShapes(t *testing.T) {
	a, b := svcObj("default", "a", 80), svcObj("default", "b", 81)
	tests := []struct {
		name, in string
		want     []string
	}{
		{"kind after items", `{"items":[` + a + `],"kind":"List"}`, []string{"default/a"}},
		{"keys in other case", `{"KIND":"List","Items":[` + a + `]}`, []string{"default/a"}},
		{"the last items win", `{"kind":"List","items":[` + a + `],"items":[` + b + `]}`, []string{"default/b"}},
		{"null items", `{"kind":"List","items":null}`, nil},
		{"other keys skipped", `{"metadata":{"resourceVersion":"7","x":[1,{"y":2}]},"kind":"List","items":[` + a + `],"apiVersion":"v1"}`, []string{"default/a"}},
		{"typed list", `{"kind":"ServiceList","items":[` + strings.Replace(a, `"kind":"Service",`, "", 1) + `]}`, []string{"default/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, _, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range svcs {
				got = append(got, s.Key())
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("services %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSSHStreamsOutput: over a real sshd, kubectl's output is decoded as
// it arrives: the remote command holds back the end of its list until
// the decoder has seen the first item (with a bound), which a Source that
// read the whole output first would never let happen. A command that
// fails after part of its list is reported as the command's failure, and
// output that is no list ends the decoding early while the command still
// finishes.
func TestSSHStreamsOutput(t *testing.T) {
	d := startSSHD(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("decoded while the command still prints", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "first-item-seen")
		kubectl, _ := script(t, fmt.Sprintf(`printf '%%s' '{"kind":"List","items":[%s'
for i in $(seq 200); do [ -e %s ] && break; sleep 0.05; done
[ -e %s ] || { echo "the decoder never saw the first item" >&2; exit 7; }
printf '%%s' ',%s]}'`, oneLine(svcObj("default", "a", 80)), marker, marker, oneLine(svcObj("default", "b", 81))))
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		var names []string
		err := s.runDecode(ctx, kubectl, func(r io.Reader) error {
			dec := json.NewDecoder(r)
			for range 3 { // {, "kind", "List"
				if _, err := dec.Token(); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // "items"
				return err
			}
			if _, err := dec.Token(); err != nil { // [
				return err
			}
			for dec.More() {
				var o object
				if err := dec.Decode(&o); err != nil {
					return err
				}
				names = append(names, o.Metadata.Name)
				if len(names) == 1 {
					if err := os.WriteFile(marker, nil, 0o644); err != nil {
						return err
					}
				}
			}
			_, err := dec.Token()
			return err
		})
		if err != nil {
			t.Fatalf("runDecode: %v", err)
		}
		if strings.Join(names, " ") != "a b" {
			t.Errorf("decoded %v, want a b", names)
		}
	})

	t.Run("a command failing mid-list is its own error", func(t *testing.T) {
		kubectl, _ := script(t, `printf '%s' '{"kind":"ServiceList","items":[{"metadata":'; echo "error: stream error: INTERNAL_ERROR" >&2; exit 3`)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		_, _, err := s.Discover(ctx)
		e, ok := errors.AsType[*CommandError](err)
		if !ok || e.ExitStatus != 3 || !strings.Contains(e.Stderr, "INTERNAL_ERROR") {
			t.Fatalf("Discover error %v, want the command's exit status 3 and stderr", err)
		}
	})

	t.Run("no list: decoding stops, the command still ends", func(t *testing.T) {
		// 4 MiB after the banner: more than the SSH window and the pipe
		// hold, so the command finishes only if the rest is drained.
		kubectl, _ := script(t, `echo "Welcome to master1"; head -c 4194304 /dev/zero | tr '\0' x; exit 0`)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		start := time.Now()
		_, _, err := s.Discover(ctx)
		if err == nil || !strings.Contains(err.Error(), `it starts with "Welcome to master1", not JSON`) {
			t.Fatalf("Discover error %v, want the not-JSON hint", err)
		}
		if _, ok := errors.AsType[*CommandError](err); ok {
			t.Errorf("Discover error %v is a *CommandError; the command succeeded", err)
		}
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("Discover took %s: the command was not drained", took)
		}
	})
}

// oneLine compacts a JSON object onto one line, without single quotes,
// for a shell script.
func oneLine(s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
