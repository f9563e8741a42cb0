package scratch

import (
	"fmt"
	"testing"

	"github.com/lbd/lbd/hack/lab"
)

func TestStatusWrite(t *testing.T) {
	l := lab.ForTest(t, lab.Options{Name: "scr", Cluster: true, Pods: 1})
	ctx := t.Context()
	run := func(stdin string, args ...string) {
		out, err := l.Kubectl(ctx, stdin, args...)
		t.Logf("$ kubectl %v\n%s\nerr=%v", args, out, err)
	}
	run(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"default","annotations":{"x":"y"},"labels":{"l":"1"}},"spec":{"type":"LoadBalancer","ports":[{"port":80}]}}`, "apply", "-f", "-")
	run(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"b","namespace":"default"},"spec":{"type":"LoadBalancer","ports":[{"port":80}]}}`, "apply", "-f", "-")
	run("", "version", "--client")
	rv, _ := l.Kubectl(ctx, "", "get", "svc", "a", "-o", "jsonpath={.metadata.resourceVersion} {.metadata.uid}")
	var v, uid string
	fmt.Sscan(rv, &v, &uid)
	obj := func(rv, uid, ip string) string {
		return `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"default","resourceVersion":"` + rv + `","uid":"` + uid + `"},"status":{"loadBalancer":{"ingress":[{"ip":"` + ip + `","ipMode":"VIP"}]}}}]}`
	}
	run(obj(v, uid, "192.168.121.250"), "apply", "--server-side", "--subresource=status", "--field-manager=lbd", "--force-conflicts", "-f", "-", "-o", "name")
	run(obj(v, uid, "192.168.121.251"), "apply", "--server-side", "--subresource=status", "--field-manager=lbd", "--force-conflicts", "-f", "-", "-o", "name")
	run(obj("", "0000", "192.168.121.252"), "apply", "--server-side", "--subresource=status", "--field-manager=lbd", "--force-conflicts", "-f", "-", "-o", "name")
	run("", "get", "svc", "a", "-o", "jsonpath={.status}")
}
