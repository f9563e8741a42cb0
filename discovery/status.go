package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lbd/lbd/lb"
)

// FieldManager is the server-side apply field manager lbd writes service
// status as: `kubectl get svc -o yaml --show-managed-fields` names it.
const FieldManager = "lbd"

// statusArgs is the one remote command of a status write. The objects go
// on its stdin: nothing from the cluster enters the command line.
const statusArgs = " apply --server-side --subresource=status --field-manager=" + FieldManager + " --force-conflicts -o name -f -"

// applyObject is the server-side apply configuration of one Service's
// status: only status.loadBalancer, conditional on the uid and
// resourceVersion the decision was made from.
type applyObject struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   applyMeta   `json:"metadata"`
	Status     applyStatus `json:"status"`
}

type applyMeta struct {
	Name            string `json:"name"`
	Namespace       string `json:"namespace"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

type applyStatus struct {
	LoadBalancer struct {
		Ingress []applyIngress `json:"ingress,omitempty"`
	} `json:"loadBalancer"`
}

type applyIngress struct {
	IP     string `json:"ip"`
	IPMode string `json:"ipMode,omitempty"`
}

// statusPayload renders writes as the kubectl List that statusArgs reads.
func statusPayload(writes []lb.StatusWrite) ([]byte, error) {
	items := make([]applyObject, len(writes))
	for i, w := range writes {
		o := applyObject{APIVersion: "v1", Kind: "Service",
			Metadata: applyMeta{Name: w.Name, Namespace: w.Namespace, UID: w.UID, ResourceVersion: w.ResourceVersion}}
		for _, ip := range w.Ingress {
			o.Status.LoadBalancer.Ingress = append(o.Status.LoadBalancer.Ingress, applyIngress{IP: ip.String(), IPMode: w.IPMode})
		}
		items[i] = o
	}
	return json.Marshal(struct {
		APIVersion string        `json:"apiVersion"`
		Kind       string        `json:"kind"`
		Items      []applyObject `json:"items"`
	}{"v1", "List", items})
}

// WriteStatus sets status.loadBalancer.ingress of every service in writes
// (an empty Ingress clears it) with one kubectl run on the master: a
// server-side apply of the status subresource as field manager "lbd",
// with the objects on stdin. Each write is conditional on its UID and
// ResourceVersion, so a Service that changed or was re-created since
// discovery is left for the next pass. It returns the writes that did not
// land, each with a reason; the error is non-nil only when the command
// could not run at all.
func (s *Source) WriteStatus(ctx context.Context, writes []lb.StatusWrite) ([]lb.Skipped, error) {
	if len(writes) == 0 {
		return nil, nil
	}
	payload, err := statusPayload(writes)
	if err != nil {
		return nil, fmt.Errorf("write service status: %w", err)
	}
	out, err := s.runInput(ctx, s.kubectl+statusArgs+s.requestTimeout, payload)
	reason := ""
	if err != nil {
		ce, ok := errors.AsType[*CommandError](err)
		if !ok || ce.ExitStatus <= 0 {
			return nil, fmt.Errorf("write service status on %s: %w", s.master, err)
		}
		// kubectl went on past the objects it could not write, naming
		// them on stderr; those it wrote are on stdout.
		reason = ce.Stderr
	}
	done := map[string]bool{}
	for _, line := range bytes.Split(out, []byte("\n")) {
		if name, ok := strings.CutPrefix(strings.TrimSpace(string(line)), "service/"); ok {
			done[name] = true
		}
	}
	var failed []lb.Skipped
	for _, w := range writes {
		// -o name prints no namespace: a name written in one namespace
		// and failed in another is counted as failed, to be retried.
		if done[w.Name] && !strings.Contains(reason, `"`+w.Name+`"`) {
			continue
		}
		r := "not written"
		if line := stderrLine(reason, w.Name); line != "" {
			r = line
		}
		failed = append(failed, lb.Skipped{Key: w.Key(), Reason: r})
	}
	return failed, nil
}

// stderrLine returns the first line of kubectl's stderr that names the
// service, or the first line at all.
func stderrLine(stderr, name string) string {
	lines := strings.Split(stderr, "\n")
	for _, l := range lines {
		if strings.Contains(l, `"`+name+`"`) {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(lines[0])
}
