package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// ServiceSpec describes a selector-less Service with external IPs and the
// Endpoints and EndpointSlice that a controller-manager would have made for
// it (none runs in the lab).
type ServiceSpec struct {
	// Namespace defaults to "default"; another one is created too.
	Namespace string
	// Name is the Service's name.
	Name string
	// ExternalIPs are the addresses lbd serves the Service on.
	ExternalIPs []netip.Addr
	// Ports are the Service's ports.
	Ports []ServicePort
	// Ready and NotReady are the endpoint addresses, usually pod IPs.
	Ready, NotReady []netip.Addr
	// Annotations go on the Service.
	Annotations map[string]string
	// ClientIPAffinity sets sessionAffinity: ClientIP, with
	// AffinitySeconds as its timeout when not zero.
	ClientIPAffinity bool
	AffinitySeconds  int
	// LoadBalancer makes it a Service of type LoadBalancer, with
	// LoadBalancerClass and SourceRanges when set.
	LoadBalancer      bool
	LoadBalancerClass string
	SourceRanges      []string
}

// ServicePort is one port of a ServiceSpec.
type ServicePort struct {
	// Name is required by Kubernetes when a Service has several ports.
	Name string
	// Port is the Service port; TargetPort the endpoints' port (0: Port).
	Port, TargetPort uint16
	// Protocol is "TCP" (default), "UDP" or "SCTP".
	Protocol string
}

// ServiceManifest renders s as a multi-document manifest for Apply: the
// namespace (unless "default"), the Service, its Endpoints and its
// EndpointSlice (labelled kubernetes.io/service-name), all in the same
// ports and addresses.
func ServiceManifest(s ServiceSpec) string {
	ns := s.Namespace
	if ns == "" {
		ns = "default"
	}
	meta := func(name string, extra map[string]any) map[string]any {
		m := map[string]any{"name": name, "namespace": ns}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	var svcPorts, epPorts []map[string]any
	for _, p := range s.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "TCP"
		}
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		sp := map[string]any{"port": p.Port, "targetPort": target, "protocol": proto}
		ep := map[string]any{"port": target, "protocol": proto}
		if p.Name != "" {
			sp["name"], ep["name"] = p.Name, p.Name
		}
		svcPorts = append(svcPorts, sp)
		epPorts = append(epPorts, ep)
	}
	strs := func(as []netip.Addr) []string {
		out := make([]string, 0, len(as))
		for _, a := range as {
			out = append(out, a.String())
		}
		return out
	}
	ips := func(as []netip.Addr) []map[string]any {
		out := make([]map[string]any, 0, len(as))
		for _, a := range as {
			out = append(out, map[string]any{"ip": a.String()})
		}
		return out
	}
	svcMeta := map[string]any{}
	if len(s.Annotations) > 0 {
		svcMeta["annotations"] = s.Annotations
	}
	subset := map[string]any{"ports": epPorts}
	if len(s.Ready) > 0 {
		subset["addresses"] = ips(s.Ready)
	}
	if len(s.NotReady) > 0 {
		subset["notReadyAddresses"] = ips(s.NotReady)
	}
	subsets := []map[string]any{}
	if len(s.Ready)+len(s.NotReady) > 0 {
		subsets = append(subsets, subset)
	}
	sliceEPs := []map[string]any{} // the API wants a list, even an empty one
	for _, set := range []struct {
		addrs []netip.Addr
		ready bool
	}{{s.Ready, true}, {s.NotReady, false}} {
		for _, a := range set.addrs {
			sliceEPs = append(sliceEPs, map[string]any{
				"addresses":  []string{a.String()},
				"conditions": map[string]any{"ready": set.ready, "serving": set.ready, "terminating": false},
			})
		}
	}
	svcSpec := map[string]any{
		"type":        "ClusterIP",
		"externalIPs": strs(s.ExternalIPs),
		"ports":       svcPorts,
	}
	if s.LoadBalancer {
		svcSpec["type"] = "LoadBalancer"
		if s.LoadBalancerClass != "" {
			svcSpec["loadBalancerClass"] = s.LoadBalancerClass
		}
		if len(s.SourceRanges) > 0 {
			svcSpec["loadBalancerSourceRanges"] = s.SourceRanges
		}
	}
	if s.ClientIPAffinity {
		svcSpec["sessionAffinity"] = "ClientIP"
		if s.AffinitySeconds > 0 {
			svcSpec["sessionAffinityConfig"] = map[string]any{"clientIP": map[string]any{"timeoutSeconds": s.AffinitySeconds}}
		}
	}
	var docs []any
	if ns != "default" {
		docs = append(docs, map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	}
	docs = append(docs,
		map[string]any{
			"apiVersion": "v1", "kind": "Service",
			"metadata": meta(s.Name, svcMeta),
			"spec":     svcSpec,
		},
		map[string]any{
			"apiVersion": "v1", "kind": "Endpoints",
			"metadata": meta(s.Name, nil),
			"subsets":  subsets,
		},
		map[string]any{
			"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
			"metadata": meta(s.Name+"-lab", map[string]any{
				"labels": map[string]string{"kubernetes.io/service-name": s.Name},
			}),
			"addressType": "IPv4",
			"endpoints":   sliceEPs,
			"ports":       epPorts,
		},
	)
	var b strings.Builder
	for _, d := range docs {
		j, err := json.Marshal(d)
		if err != nil {
			panic(fmt.Sprintf("lab: marshal manifest: %v", err)) // maps of plain values always marshal
		}
		b.WriteString("---\n")
		b.Write(j)
		b.WriteString("\n")
	}
	return b.String()
}
