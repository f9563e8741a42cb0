package discovery

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lbd/lbd/lb"
)

// serviceNameLabel is the label that ties an EndpointSlice to its Service.
const serviceNameLabel = "kubernetes.io/service-name"

// The wire types below hold only the fields lbd reads, with Kubernetes'
// JSON names. Numbers decode into int, so an out-of-range value is seen and
// rejected instead of wrapping; strings are checked before they become
// typed lb values.

// kubeList is a list with its items left as JSON.
type kubeList struct {
	Kind  string            `json:"kind"`
	Items []json.RawMessage `json:"items"`
}

// object is the union of the three kinds lbd reads. Their top-level fields
// do not overlap, so one decode serves all of them.
type object struct {
	Kind     string   `json:"kind"`
	Metadata metadata `json:"metadata"`

	// Service.
	Spec   serviceSpec   `json:"spec"`
	Status serviceStatus `json:"status"`

	// EndpointSlice.
	AddressType string          `json:"addressType"`
	Endpoints   []sliceEndpoint `json:"endpoints"`
	Ports       []slicePort     `json:"ports"`

	// Endpoints.
	Subsets []subset `json:"subsets"`

	// slice is the EndpointSlice part above (addressType, endpoints,
	// ports) validated into its group as soon as the item is decoded
	// (see compact); those fields are then dropped.
	slice *sliceResult
}

// sliceResult is one EndpointSlice validated on its own: its group, or
// that it has none (an address type lbd does not read), or the field that
// rejects its service and why.
type sliceResult struct {
	group         endpointGroup
	none          bool
	field, reason string
}

// compact validates the EndpointSlice part of o into o.slice and drops
// the decoded fields, which take several times the memory (a growing
// slice per endpoint and per address). Items of other kinds carry none
// of those fields and are left alone.
func compact(o *object) {
	if o.AddressType == "" && o.Endpoints == nil && o.Ports == nil {
		return
	}
	r := validateSlice(o)
	o.slice = &r
	o.AddressType, o.Endpoints, o.Ports = "", nil, nil
}

type metadata struct {
	Name            string            `json:"name"`
	Namespace       string            `json:"namespace"`
	UID             string            `json:"uid"`
	ResourceVersion string            `json:"resourceVersion"`
	Labels          map[string]string `json:"labels"`
	Annotations     map[string]string `json:"annotations"`
}

type serviceSpec struct {
	Type                  string          `json:"type"`
	ClusterIP             string          `json:"clusterIP"`
	ExternalIPs           []string        `json:"externalIPs"`
	Ports                 []servicePort   `json:"ports"`
	SessionAffinity       string          `json:"sessionAffinity"`
	SessionAffinityConfig *affinityConfig `json:"sessionAffinityConfig"`
	// LoadBalancer services only.
	LoadBalancerClass        *string  `json:"loadBalancerClass"`
	LoadBalancerIP           string   `json:"loadBalancerIP"`
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges"`
}

type affinityConfig struct {
	ClientIP *struct {
		TimeoutSeconds *int `json:"timeoutSeconds"`
	} `json:"clientIP"`
}

type servicePort struct {
	Name       string      `json:"name"`
	Port       int         `json:"port"`
	Protocol   string      `json:"protocol"`
	TargetPort intOrString `json:"targetPort"`
}

type serviceStatus struct {
	LoadBalancer struct {
		Ingress []struct {
			IP     string `json:"ip"`
			IPMode string `json:"ipMode"`
		} `json:"ingress"`
	} `json:"loadBalancer"`
}

type sliceEndpoint struct {
	Addresses  []string `json:"addresses"`
	Conditions struct {
		Ready       *bool `json:"ready"`
		Serving     *bool `json:"serving"`
		Terminating *bool `json:"terminating"`
	} `json:"conditions"`
}

// slicePort is discovery.k8s.io/v1 EndpointPort: every field is optional.
type slicePort struct {
	Name     *string `json:"name"`
	Port     *int    `json:"port"`
	Protocol *string `json:"protocol"`
}

type subset struct {
	Addresses         []endpointAddress `json:"addresses"`
	NotReadyAddresses []endpointAddress `json:"notReadyAddresses"`
	Ports             []endpointPort    `json:"ports"`
}

type endpointAddress struct {
	IP string `json:"ip"`
}

type endpointPort struct {
	Name     string `json:"name"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

// intOrString is Kubernetes' IntOrString. It never fails to decode, so one
// odd targetPort cannot abort the decoding of the rest of its object; the
// value is checked later, with its field path.
type intOrString struct {
	set   bool
	isStr bool
	str   string // the string, or the number's JSON text
	bad   bool   // neither a number nor a string
}

// UnmarshalJSON records a number, a string or null; it never fails.
func (v *intOrString) UnmarshalJSON(b []byte) error {
	*v = intOrString{set: true}
	switch {
	case bytes.Equal(b, []byte("null")):
		v.set = false
	case len(b) > 0 && b[0] == '"':
		v.isStr = true
		if err := json.Unmarshal(b, &v.str); err != nil {
			v.bad = true
		}
	case len(b) > 0 && (b[0] == '-' || (b[0] >= '0' && b[0] <= '9')):
		v.str = string(b)
	default:
		v.bad = true
		v.str = string(b)
	}
	return nil
}

// endpointRef is one usable endpoint of a slice or Endpoints subset, with
// its address already parsed.
type endpointRef struct {
	ip                          netip.Addr
	ready, serving, terminating bool
}

// Limits of the Kubernetes API's validation of an EndpointSlice. lbd
// enforces them itself, so that even a compromised master cannot make it
// multiply ports by endpoints into more than the API allows; it applies
// them to each subset of a legacy Endpoints object too (the endpoints
// controller writes at most 1000 addresses).
const (
	maxSlicePorts     = 100
	maxSliceEndpoints = 1000
)

// portRef is one validated port of a slice or Endpoints subset.
type portRef struct {
	name  string
	proto lb.Protocol
	port  uint16
}

// notJSON explains output that does not even start like kubectl's JSON:
// most often a login script of the remote user (~/.bashrc, a banner) that
// prints to stdout ahead of kubectl. It quotes the first line, shortened,
// and returns "" for output that starts with "{" or "[".
func notJSON(data []byte) string {
	rest := bytes.TrimLeft(data, " \t\r\n")
	if len(rest) == 0 || rest[0] == '{' || rest[0] == '[' {
		return ""
	}
	first, _, _ := bytes.Cut(rest, []byte("\n"))
	if len(first) > 80 {
		first = first[:80]
	}
	return fmt.Sprintf("it starts with %q, not JSON (does a login script of the remote user print to stdout?)", first)
}

// endpointGroup is a validated slice or subset: every endpoint in it serves
// every port in it.
type endpointGroup struct {
	ports     []portRef
	endpoints []endpointRef
}

// listKinds are the kinds of the typed lists the API server answers a
// LIST with (kubectl get --raw), by the kind of their items, which carry
// none of their own.
var listKinds = map[string]string{
	"ServiceList":       "Service",
	"EndpointSliceList": "EndpointSlice",
	"EndpointsList":     "Endpoints",
}

// Parse decodes the JSON lists that kubectl prints into services with
// resolved endpoints. Each list is either kubectl's own List (as printed
// for "get services,endpointslices.discovery.k8s.io -o json", its items
// carrying their kind) or the API server's typed list (ServiceList,
// EndpointSliceList, EndpointsList, as "get --raw /api/v1/services"
// prints it); the items of all lists are read together, and several lists
// are decoded at once.
//
// Every value is validated here, once. A service with a bad field, or
// whose EndpointSlices or Endpoints hold a bad field, is left out and
// reported as one *lb.InvalidServiceError naming it and the field; the
// others are returned normalized and sorted by namespace and name.
// ExternalName services and items of other kinds are skipped without error.
// When the lists hold any EndpointSlice, Endpoints objects are ignored.
//
// The API's own limits hold even when the master does not enforce them: a
// slice (or legacy subset) with more than 100 ports or 1000 endpoints, or
// two ports of one name, rejects its service. Only the first address of an
// endpoint is used, as in kube-proxy. So every service port gets at most
// 1000 endpoints per slice or subset.
// The error is non-nil only when some list as a whole is not one of those.
func Parse(lists ...[]byte) ([]lb.Service, []*lb.InvalidServiceError, error) {
	decoded := make([]decodedList, len(lists))
	var wg sync.WaitGroup
	for i, data := range lists {
		wg.Go(func() { decoded[i] = decodeList(data) })
	}
	wg.Wait()
	return assemble(decoded)
}

// assemble builds the services of lists decoded by [decodeStream] (see
// [Parse]); the first list that failed as a whole fails it.
func assemble(decoded []decodedList) ([]lb.Service, []*lb.InvalidServiceError, error) {
	for _, d := range decoded {
		if d.err != nil {
			return nil, nil, d.err
		}
	}
	return build(decoded)
}

// decodedList is one list of [Parse] decoded: its items, each with the
// error of its own decoding, or the error of the list as a whole.
type decodedList struct {
	items []object
	errs  []error
	err   error
}

// decodeList decodes kubectl's List or a typed list held in data.
func decodeList(data []byte) decodedList { return decodeStream(bytes.NewReader(data)) }

// decodeStream decodes kubectl's List or a typed list as it reads it from
// r, item by item: only the item being decoded is held as JSON, never the
// list (tens of megabytes at 10,000 services). The items of a typed list
// get the kind of the list's items. An item holding a value of the wrong
// JSON type is kept with its error, so that its service is rejected by
// name; anything else that is not such a list fails the list as a whole.
func decodeStream(r io.Reader) decodedList {
	head := &headReader{r: r}
	kind, d := decodeItems(json.NewDecoder(head))
	if d.err != nil {
		if errors.Is(d.err, io.EOF) || errors.Is(d.err, io.ErrUnexpectedEOF) {
			d.err = errors.New("unexpected end of JSON input")
		}
		if hint := notJSON(head.head); hint != "" {
			return decodedList{err: fmt.Errorf("parse kubectl output: %s: %w", hint, d.err)}
		}
		return decodedList{err: fmt.Errorf("parse kubectl output: %w", d.err)}
	}
	if kind == "List" {
		return d
	}
	itemKind, ok := listKinds[kind]
	if !ok {
		return decodedList{err: fmt.Errorf("parse kubectl output: kind %q, want List, ServiceList, EndpointSliceList or EndpointsList", kind)}
	}
	for i := range d.items {
		if d.items[i].Kind == "" {
			d.items[i].Kind = itemKind
		}
	}
	return d
}

// decodeItems reads one JSON object, the list, from dec: its kind and
// its items. Keys match as encoding/json matches them (case-insensitive,
// the last of duplicates wins); other keys are skipped; nothing may
// follow the object.
func decodeItems(dec *json.Decoder) (string, decodedList) {
	var d decodedList
	fail := func(err error) (string, decodedList) { return "", decodedList{err: err} }
	if err := expectDelim(dec, '{', "a list object"); err != nil {
		return fail(err)
	}
	var kind string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fail(err)
		}
		key, _ := tok.(string)
		switch {
		case strings.EqualFold(key, "kind"):
			kind = ""
			err = dec.Decode(&kind)
		case strings.EqualFold(key, "items"):
			d.items, d.errs, err = decodeArray(dec)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return fail(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return fail(err)
	}
	switch tok, err := dec.Token(); {
	case err == nil:
		return fail(fmt.Errorf("invalid character %v after top-level value", tok))
	case err != io.EOF:
		return fail(err)
	}
	return kind, d
}

// decodeArray reads the items array (or null) from dec, one object at a
// time.
func decodeArray(dec *json.Decoder) ([]object, []error, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if tok == nil {
		return nil, nil, nil
	}
	if tok != json.Delim('[') {
		return nil, nil, fmt.Errorf("json: cannot unmarshal %s into the items of a list", jsonType(tok))
	}
	var items []object
	var errs []error
	for dec.More() {
		items = append(items, object{})
		err := dec.Decode(&items[len(items)-1])
		if err != nil && !errors.As(err, new(*json.UnmarshalTypeError)) {
			return nil, nil, err
		}
		if err == nil {
			compact(&items[len(items)-1])
		}
		errs = append(errs, err)
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, nil, err
	}
	return items, errs, nil
}

// expectDelim reads the next token of dec and fails unless it is delim,
// naming what was expected.
func expectDelim(dec *json.Decoder, delim json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != delim {
		return fmt.Errorf("json: cannot unmarshal %s into %s", jsonType(tok), what)
	}
	return nil
}

// jsonType names the JSON type that tok starts, as encoding/json's
// errors do.
func jsonType(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			return "array"
		}
		return "object"
	case string:
		return "string"
	case bool:
		return "bool"
	case nil:
		return "null"
	default:
		return "number"
	}
}

// headReader passes reads through and keeps their first bytes, so that an
// error can quote the start of the output.
type headReader struct {
	r    io.Reader
	head []byte
}

func (h *headReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if room := 128 - len(h.head); room > 0 {
		h.head = append(h.head, p[:min(n, room)]...)
	}
	return n, err
}

// build resolves the items of the decoded lists into services (see
// [Parse]); the lists are read in place, not joined.
func build(lists []decodedList) ([]lb.Service, []*lb.InvalidServiceError, error) {
	var (
		svcs     []*object
		svcErrs  []error
		bySlice  = map[string][]*object{}               // EndpointSlices by ns/service
		byName   = map[string]*object{}                 // Endpoints by ns/name
		objErr   = map[string]*lb.InvalidServiceError{} // by ns/name of the service
		anySlice bool
	)
	for l := range lists {
		items, itemErrs := lists[l].items, lists[l].errs
		for i := range items {
			o, err := &items[i], itemErrs[i]
			switch o.Kind {
			case "Service":
				svcs = append(svcs, o)
				svcErrs = append(svcErrs, err)
			case "EndpointSlice":
				anySlice = true
				svc := o.Metadata.Labels[serviceNameLabel]
				if svc == "" {
					continue // not managed for a Service
				}
				key := o.Metadata.Namespace + "/" + svc
				if err != nil {
					if objErr[key] == nil {
						objErr[key] = decodeError(o.Metadata.Namespace, svc, "endpointslice "+objName(o.Metadata.Name), err)
					}
					continue
				}
				bySlice[key] = append(bySlice[key], o)
			case "Endpoints":
				key := o.Metadata.Namespace + "/" + o.Metadata.Name
				if err != nil {
					if objErr[key] == nil {
						objErr[key] = decodeError(o.Metadata.Namespace, o.Metadata.Name, "endpoints "+objName(o.Metadata.Name), err)
					}
					continue
				}
				byName[key] = o
			}
		}
	}

	out := make([]lb.Service, 0, len(svcs))
	var invalid []*lb.InvalidServiceError
	seen := make(map[string]bool, len(svcs))
	for i, o := range svcs {
		ns, name := o.Metadata.Namespace, o.Metadata.Name
		key := ns + "/" + name
		if svcErrs[i] != nil {
			invalid = append(invalid, decodeError(ns, name, "", svcErrs[i]))
			continue
		}
		if seen[key] {
			invalid = append(invalid, &lb.InvalidServiceError{Namespace: ns, Name: name, Field: "metadata.name", Reason: "listed twice"})
			continue
		}
		seen[key] = true
		if e := objErr[key]; e != nil {
			invalid = append(invalid, e)
			continue
		}
		var groups []endpointGroup
		var bad *lb.InvalidServiceError
		if anySlice {
			groups, bad = sliceGroups(ns, name, bySlice[key])
		} else if ep := byName[key]; ep != nil {
			groups, bad = subsetGroups(ns, name, ep)
		}
		if bad != nil {
			invalid = append(invalid, bad)
			continue
		}
		svc, skip, bad := buildService(o, groups)
		switch {
		case bad != nil:
			invalid = append(invalid, bad)
		case !skip:
			out = append(out, svc)
		}
	}
	lb.SortServices(out)
	slices.SortFunc(invalid, func(a, b *lb.InvalidServiceError) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name), strings.Compare(a.Field, b.Field))
	})
	return out, invalid, nil
}

// decodeError turns a JSON type error in one object into the rejection of
// the service it belongs to. prefix names the object when it is not the
// Service itself.
func decodeError(ns, name, prefix string, err error) *lb.InvalidServiceError {
	field, reason := "(object)", err.Error()
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field != "" {
			field = te.Field
		}
		reason = fmt.Sprintf("JSON %s where %s is expected", te.Value, te.Type)
	}
	if prefix != "" {
		field = prefix + ": " + field
	}
	return &lb.InvalidServiceError{Namespace: ns, Name: name, Field: field, Reason: reason}
}

// buildService turns a decoded Service and its endpoint groups into an
// lb.Service. skip is true for a service with nothing to balance.
func buildService(o *object, groups []endpointGroup) (svc lb.Service, skip bool, _ *lb.InvalidServiceError) {
	ns, name := o.Metadata.Namespace, o.Metadata.Name
	bad := func(field, format string, a ...any) (lb.Service, bool, *lb.InvalidServiceError) {
		return lb.Service{}, false, &lb.InvalidServiceError{Namespace: ns, Name: name, Field: field, Reason: fmt.Sprintf(format, a...)}
	}
	// Names, and every other rule of lb.Service, are checked by Validate
	// at the end; the checks here are those that need the raw values (a
	// port before it fits a uint16, indices before Normalize sorts).
	spec := &o.Spec
	svc = lb.Service{Namespace: ns, Name: name, Type: spec.Type}
	switch spec.Type {
	case "":
		svc.Type = "ClusterIP" // the API's default
	case "ClusterIP", "NodePort", "LoadBalancer":
	case "ExternalName":
		return lb.Service{}, true, nil
	default:
		return bad("spec.type", "unknown type %q", spec.Type)
	}

	if c := spec.ClusterIP; c != "" && c != "None" {
		ip, err := parseIP(c)
		if err != nil {
			return bad("spec.clusterIP", "%v", err)
		}
		svc.ClusterIP = ip
	}
	for i, s := range spec.ExternalIPs {
		ip, err := parseUnicast(s)
		if err != nil {
			return bad(fmt.Sprintf("spec.externalIPs[%d]", i), "%v", err)
		}
		svc.ExternalIPs = append(svc.ExternalIPs, ip)
	}
	if svc.Type == "LoadBalancer" {
		l, e := loadBalancer(o)
		if e != nil {
			return lb.Service{}, false, e
		}
		svc.LoadBalancer = l
		for i, r := range spec.LoadBalancerSourceRanges {
			p, err := netip.ParsePrefix(strings.TrimSpace(r))
			if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
				return bad(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "%q is not a CIDR", r)
			}
			svc.SourceRanges = append(svc.SourceRanges, p.Masked())
		}
	}

	switch a := lb.Affinity(spec.SessionAffinity); a {
	case "", lb.AffinityNone:
		svc.Affinity = lb.AffinityNone
	case lb.AffinityClientIP:
		svc.Affinity = a
		svc.AffinityTimeout = lb.DefaultAffinityTimeout
		if c := spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			t := *c.ClientIP.TimeoutSeconds
			if t < 1 || t > int(lb.MaxAffinityTimeout/time.Second) {
				return bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is outside 1-%d", t, int(lb.MaxAffinityTimeout/time.Second))
			}
			svc.AffinityTimeout = time.Duration(t) * time.Second
		}
	default:
		return bad("spec.sessionAffinity", "unknown mode %q", spec.SessionAffinity)
	}

	if len(spec.Ports) > 0 {
		svc.Ports = make([]lb.Port, 0, len(spec.Ports))
	}
	// Duplicates are found through maps: a service may list many ports.
	type portKey struct {
		port  uint16
		proto lb.Protocol
	}
	byPort := make(map[portKey]int, len(spec.Ports))
	byName := make(map[string]int, len(spec.Ports))
	for i, sp := range spec.Ports {
		f := "spec.ports[" + strconv.Itoa(i) + "]"
		if sp.Name != "" && !lb.IsDNSLabel(sp.Name) {
			return bad(f+".name", "%q is not an RFC 1123 label", sp.Name)
		}
		if sp.Name == "" && len(spec.Ports) > 1 {
			return bad(f+".name", "a port of a multi-port service must be named")
		}
		if sp.Port < 1 || sp.Port > 65535 {
			return bad(f+".port", "%d is outside 1-65535", sp.Port)
		}
		proto, err := lb.ParseProtocol(sp.Protocol)
		if err != nil {
			return bad(f+".protocol", "%v", err)
		}
		target, err := targetPort(sp.TargetPort, sp.Port)
		if err != nil {
			return bad(f+".targetPort", "%v", err)
		}
		p := lb.Port{Name: sp.Name, Port: uint16(sp.Port), Protocol: proto, TargetPort: target}
		pk := portKey{p.Port, p.Protocol}
		if j, dup := byPort[pk]; dup {
			return bad(f, "duplicate of spec.ports[%d] %s", j, p)
		}
		if j, dup := byName[p.Name]; dup {
			return bad(f+".name", "duplicate of spec.ports[%d].name %q", j, p.Name)
		}
		byPort[pk], byName[p.Name] = i, i
		p.Endpoints = resolve(groups, p.Name, proto)
		svc.Ports = append(svc.Ports, p)
	}

	svc.Normalize()
	if err := svc.Validate(); err != nil {
		if e, ok := errors.AsType[*lb.InvalidServiceError](err); ok {
			return lb.Service{}, false, e
		}
		return bad("(service)", "%v", err)
	}
	return svc, false, nil
}

// loadBalancer reads what a Service of type LoadBalancer asks of lbd: its
// class, the addresses it requests, its sharing key, and the ingress IPs
// in its status. Hostname-only ingress entries are ignored: lbd cannot
// serve them.
func loadBalancer(o *object) (*lb.LoadBalancer, *lb.InvalidServiceError) {
	ns, name := o.Metadata.Namespace, o.Metadata.Name
	bad := func(field, format string, a ...any) (*lb.LoadBalancer, *lb.InvalidServiceError) {
		return nil, &lb.InvalidServiceError{Namespace: ns, Name: name, Field: field, Reason: fmt.Sprintf(format, a...)}
	}
	l := &lb.LoadBalancer{UID: o.Metadata.UID, ResourceVersion: o.Metadata.ResourceVersion}
	if !isToken(l.UID, 64) && l.UID != "" {
		return bad("metadata.uid", "%q is not a UID", l.UID)
	}
	if !isToken(l.ResourceVersion, 64) && l.ResourceVersion != "" {
		return bad("metadata.resourceVersion", "%q is not a resource version", l.ResourceVersion)
	}
	if c := o.Spec.LoadBalancerClass; c != nil {
		if !isClass(*c) {
			return bad("spec.loadBalancerClass", "%q is not a class name", *c)
		}
		l.Class = *c
	}
	ann := o.Metadata.Annotations
	if v, ok := ann[lb.AnnotationLoadBalancerIPs]; ok {
		field := "metadata.annotations[" + lb.AnnotationLoadBalancerIPs + "]"
		for _, part := range strings.Split(v, ",") {
			ip, err := parseUnicast(strings.TrimSpace(part))
			if err != nil {
				return bad(field, "%v", err)
			}
			l.Requested = append(l.Requested, ip)
		}
		if len(l.Requested) > 2 || (len(l.Requested) == 2 && l.Requested[0].Is4() == l.Requested[1].Is4()) {
			return bad(field, "at most one IPv4 and one IPv6 address")
		}
	} else if v := o.Spec.LoadBalancerIP; v != "" {
		ip, err := parseUnicast(v)
		if err != nil {
			return bad("spec.loadBalancerIP", "%v", err)
		}
		l.Requested = []netip.Addr{ip}
	}
	if v, ok := ann[lb.AnnotationAllowSharedIP]; ok {
		if !isToken(v, 63) {
			return bad("metadata.annotations["+lb.AnnotationAllowSharedIP+"]", "%q is not 1-63 characters of letters, digits, '-', '_' or '.'", v)
		}
		l.Share = v
	}
	for i, in := range o.Status.LoadBalancer.Ingress {
		if in.IP == "" {
			continue
		}
		ip, err := parseUnicast(in.IP)
		if err != nil {
			return bad(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), "%v", err)
		}
		l.Ingress = append(l.Ingress, ip)
		switch {
		case len(l.Ingress) == 1 || l.IPMode == in.IPMode:
			l.IPMode = in.IPMode
		default:
			l.IPMode = "mixed"
		}
	}
	slices.SortFunc(l.Ingress, netip.Addr.Compare)
	l.Ingress = slices.Compact(l.Ingress)
	return l, nil
}

// isToken reports whether s is 1..max characters of letters, digits, '-',
// '_' and '.': the form of UIDs, resource versions and sharing keys.
func isToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// isClass reports whether s is a label-style class name: an optional
// DNS-subdomain prefix and "/", then a name of tokens (as the API
// validates spec.loadBalancerClass).
func isClass(s string) bool {
	if len(s) > 316 {
		return false
	}
	prefix, name, found := strings.Cut(s, "/")
	if !found {
		name, prefix = prefix, ""
	}
	if found && !isToken(prefix, 253) || !isToken(name, 63) {
		return false
	}
	return !strings.Contains(name, "/")
}

// targetPort returns spec.ports[].targetPort as lb.Port stores it: a port
// number or a container port name; absent, 0 or "" mean the service port,
// as in the API's defaulting.
func targetPort(v intOrString, port int) (string, error) {
	switch {
	case v.bad:
		return "", fmt.Errorf("JSON %s is neither a number nor a string", quoteRaw(v.str))
	case !v.set, v.isStr && v.str == "", !v.isStr && v.str == "0":
		return strconv.Itoa(port), nil
	case v.isStr:
		if !lb.IsPortName(v.str) {
			return "", fmt.Errorf("%q is not a valid port name", v.str)
		}
		return v.str, nil
	}
	n, err := strconv.Atoi(v.str)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%s is outside 1-65535", v.str)
	}
	return strconv.Itoa(n), nil
}

// resolve collects the endpoints serving the service port (name, proto):
// every endpoint in a group that has a port of that name and protocol, at
// that port's number. An address listed twice (as in two
// slices during a rollout) appears once, ready if any listing is ready.
func resolve(groups []endpointGroup, name string, proto lb.Protocol) []lb.Endpoint {
	var eps []lb.Endpoint
	for gi := range groups {
		g := &groups[gi]
		for _, p := range g.ports {
			if p.name != name || p.proto != proto {
				continue
			}
			for _, e := range g.endpoints {
				eps = append(eps, lb.Endpoint{IP: e.ip, Port: p.port, Ready: e.ready, Serving: e.serving, Terminating: e.terminating})
			}
		}
	}
	if len(eps) < 2 {
		return eps
	}
	// Merge duplicates here, deterministically, so that Normalize (whose
	// sort is not stable) never has to pick between two listings.
	slices.SortFunc(eps, func(a, b lb.Endpoint) int {
		return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port))
	})
	out := eps[:1]
	for _, e := range eps[1:] {
		last := &out[len(out)-1]
		if e.IP == last.IP && e.Port == last.Port {
			last.Ready = last.Ready || e.Ready
			last.Serving = last.Serving || e.Serving
			last.Terminating = last.Terminating && e.Terminating
			continue
		}
		out = append(out, e)
	}
	return out
}

// sliceGroups validates the EndpointSlices of service ns/name. Slices of
// addressType FQDN (or a type lbd does not know) are skipped.
func sliceGroups(ns, name string, objs []*object) ([]endpointGroup, *lb.InvalidServiceError) {
	groups := make([]endpointGroup, 0, len(objs))
	for _, o := range objs {
		r := o.slice
		if r == nil {
			v := validateSlice(o)
			r = &v
		}
		if r.field != "" {
			return nil, &lb.InvalidServiceError{Namespace: ns, Name: name, Field: "endpointslice " + objName(o.Metadata.Name) + ": " + r.field, Reason: r.reason}
		}
		if !r.none {
			groups = append(groups, r.group)
		}
	}
	return groups, nil
}

// validateSlice validates the addressType, ports and endpoints of one
// EndpointSlice into its group. A slice of an address type other than
// IPv4 and IPv6 has none; a bad field is returned with the reason, and
// rejects the slice's service.
func validateSlice(o *object) sliceResult {
	var want func(netip.Addr) bool
	switch o.AddressType {
	case "IPv4":
		want = netip.Addr.Is4
	case "IPv6":
		want = netip.Addr.Is6
	default:
		return sliceResult{none: true}
	}
	bad := func(field, format string, a ...any) sliceResult {
		return sliceResult{field: field, reason: fmt.Sprintf(format, a...)}
	}
	if n := len(o.Ports); n > maxSlicePorts {
		return bad("ports", "%d ports, more than the API's limit of %d", n, maxSlicePorts)
	}
	if n := len(o.Endpoints); n > maxSliceEndpoints {
		return bad("endpoints", "%d endpoints, more than the API's limit of %d", n, maxSliceEndpoints)
	}
	g := endpointGroup{ports: make([]portRef, 0, len(o.Ports))}
	portNames := make(map[string]int, len(o.Ports))
	for j, p := range o.Ports {
		var pn string
		if p.Name != nil {
			pn = *p.Name
		}
		// The API requires unique names; with them a service port
		// matches at most one port of a slice.
		if k, dup := portNames[pn]; dup {
			return bad(fmt.Sprintf("ports[%d].name", j), "duplicate of ports[%d].name %q", k, pn)
		}
		portNames[pn] = j
		if p.Port == nil {
			continue // "all ports": nothing lbd can forward to
		}
		if *p.Port < 1 || *p.Port > 65535 {
			return bad(fmt.Sprintf("ports[%d].port", j), "%d is outside 1-65535", *p.Port)
		}
		var ps string
		if p.Protocol != nil {
			ps = *p.Protocol
		}
		proto, err := lb.ParseProtocol(ps)
		if err != nil {
			return bad(fmt.Sprintf("ports[%d].protocol", j), "%v", err)
		}
		g.ports = append(g.ports, portRef{name: pn, proto: proto, port: uint16(*p.Port)})
	}
	g.endpoints = make([]endpointRef, 0, len(o.Endpoints))
	for j, e := range o.Endpoints {
		// Only the first address counts: the API defines no meaning
		// for the others, and kube-proxy ignores them too.
		if len(e.Addresses) == 0 {
			continue
		}
		ip, err := parseUnicast(e.Addresses[0])
		if err == nil && !want(ip) {
			err = fmt.Errorf("%s is not an %s address", ip, o.AddressType)
		}
		if err != nil {
			return bad(fmt.Sprintf("endpoints[%d].addresses[0]", j), "%v", err)
		}
		r := endpointRef{ip: ip}
		c := &e.Conditions
		// Per the API: ready nil means true, serving nil means as ready.
		r.ready = c.Ready == nil || *c.Ready
		r.serving = r.ready
		if c.Serving != nil {
			r.serving = *c.Serving
		}
		r.terminating = c.Terminating != nil && *c.Terminating
		g.endpoints = append(g.endpoints, r)
	}
	return sliceResult{group: g}
}

// subsetGroups validates the legacy Endpoints object of service ns/name.
func subsetGroups(ns, name string, o *object) ([]endpointGroup, *lb.InvalidServiceError) {
	groups := make([]endpointGroup, 0, len(o.Subsets))
	for i, s := range o.Subsets {
		bad := func(field, format string, a ...any) ([]endpointGroup, *lb.InvalidServiceError) {
			return nil, &lb.InvalidServiceError{Namespace: ns, Name: name, Field: fmt.Sprintf("endpoints %s: subsets[%d].%s", objName(o.Metadata.Name), i, field), Reason: fmt.Sprintf(format, a...)}
		}
		if n := len(s.Ports); n > maxSlicePorts {
			return bad("ports", "%d ports, more than the limit of %d (that of an EndpointSlice)", n, maxSlicePorts)
		}
		if n := len(s.Addresses) + len(s.NotReadyAddresses); n > maxSliceEndpoints {
			return bad("addresses", "%d addresses, more than the limit of %d (that of an EndpointSlice)", n, maxSliceEndpoints)
		}
		g := endpointGroup{ports: make([]portRef, 0, len(s.Ports))}
		portNames := make(map[string]int, len(s.Ports))
		for j, p := range s.Ports {
			if k, dup := portNames[p.Name]; dup {
				return bad(fmt.Sprintf("ports[%d].name", j), "duplicate of ports[%d].name %q", k, p.Name)
			}
			portNames[p.Name] = j
			if p.Port < 1 || p.Port > 65535 {
				return bad(fmt.Sprintf("ports[%d].port", j), "%d is outside 1-65535", p.Port)
			}
			proto, err := lb.ParseProtocol(p.Protocol)
			if err != nil {
				return bad(fmt.Sprintf("ports[%d].protocol", j), "%v", err)
			}
			g.ports = append(g.ports, portRef{name: p.Name, proto: proto, port: uint16(p.Port)})
		}
		g.endpoints = make([]endpointRef, 0, len(s.Addresses)+len(s.NotReadyAddresses))
		for _, list := range []struct {
			field string
			addrs []endpointAddress
			ready bool
		}{{"addresses", s.Addresses, true}, {"notReadyAddresses", s.NotReadyAddresses, false}} {
			for j, a := range list.addrs {
				ip, err := parseUnicast(a.IP)
				if err != nil {
					return bad(fmt.Sprintf("%s[%d].ip", list.field, j), "%v", err)
				}
				g.endpoints = append(g.endpoints, endpointRef{ip: ip, ready: list.ready, serving: list.ready})
			}
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// objName returns the name of an EndpointSlice or Endpoints object for a
// field path: as it is when it is a valid object name (an RFC 1123
// subdomain), quoted otherwise, so that a raw name from the cluster cannot
// forge a line of output or send an escape sequence to a terminal.
func objName(s string) string {
	ok := len(s) > 0 && len(s) <= 253
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		ok = alnum || (c == '-' || c == '.') && i > 0 && i < len(s)-1
	}
	if ok {
		return s
	}
	return strconv.Quote(s)
}

// quoteRaw quotes raw JSON text from the cluster for a message, cut to 64
// bytes.
func quoteRaw(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// parseIP parses an address as the cluster writes it: no zone, no
// IPv4-mapped IPv6 form.
func parseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	case ip.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone", s)
	case ip.Is4In6():
		return netip.Addr{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address", s)
	}
	return ip, nil
}

// parseUnicast parses an address that traffic is sent to or served on
// (external IPs, pod IPs). Like Kubernetes' own validation it refuses the
// unspecified, loopback, link-local and multicast ranges.
func parseUnicast(s string) (netip.Addr, error) {
	ip, err := parseIP(s)
	if err != nil {
		return ip, err
	}
	switch {
	case ip.IsUnspecified():
		return netip.Addr{}, fmt.Errorf("%s is the unspecified address", ip)
	case ip.IsLoopback():
		return netip.Addr{}, fmt.Errorf("%s is a loopback address", ip)
	case ip.IsMulticast():
		return netip.Addr{}, fmt.Errorf("%s is a multicast address", ip)
	case ip.IsLinkLocalUnicast():
		return netip.Addr{}, fmt.Errorf("%s is a link-local address", ip)
	}
	return ip, nil
}
