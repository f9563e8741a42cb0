package lb

import (
	"fmt"
	"time"
)

// InvalidServiceError says why one service from the cluster was rejected.
// The caller skips that service and goes on with the others.
type InvalidServiceError struct {
	Namespace string
	Name      string
	// Field is the offending field's path, e.g. "spec.ports[1].port".
	Field string
	// Reason says what is wrong, including the bad value where it is safe
	// to print.
	Reason string
}

func (e *InvalidServiceError) Error() string {
	ns, name := e.Namespace, e.Name
	// The names of a rejected service are the cluster's raw strings: quote
	// them unless they are valid, so they cannot forge a line of output.
	if !IsDNSLabel(ns) || !IsServiceName(name) {
		ns, name = fmt.Sprintf("%q", ns), fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("service %s/%s: %s: %s", ns, name, e.Field, e.Reason)
}

// Limits from Kubernetes' own validation.
const (
	maxLabelLen   = 63
	maxPortName   = 63
	maxTargetName = 15
	// MaxAffinityTimeout is Kubernetes' upper bound for
	// sessionAffinityConfig.clientIP.timeoutSeconds (one day).
	MaxAffinityTimeout = 86400 * time.Second
)

// IsDNSLabel reports whether s is an RFC 1123 label: 1-63 characters of
// lower-case letters, digits and '-', starting and ending alphanumeric.
// Namespaces and port names are such labels.
func IsDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > maxLabelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// IsServiceName reports whether s is a valid Service name: an RFC 1035
// label (an RFC 1123 label that starts with a letter).
func IsServiceName(s string) bool {
	return IsDNSLabel(s) && s[0] >= 'a' && s[0] <= 'z'
}

// IsPortName reports whether s is a valid named container port
// (IANA_SVC_NAME): 1-15 characters of [a-z0-9-], at least one letter, no
// leading, trailing or double '-'.
func IsPortName(s string) bool {
	if len(s) == 0 || len(s) > maxTargetName || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-' && s[i-1] != '-':
		default:
			return false
		}
	}
	return letter
}

// ParseProtocol returns the protocol for Kubernetes' spelling; an empty
// string means TCP, as in the API's defaulting.
func ParseProtocol(s string) (Protocol, error) {
	switch Protocol(s) {
	case "", TCP:
		return TCP, nil
	case UDP, SCTP:
		return Protocol(s), nil
	}
	return "", fmt.Errorf("unknown protocol %q (want TCP, UDP or SCTP)", s)
}

// Validate checks every field of a normalized service against the rules
// above and returns an *InvalidServiceError for the first bad one. Values
// that passed discovery's parsing always pass; Validate exists so that
// every producer of services (discovery, the store, tests) is held to the
// same contract.
func (s *Service) Validate() error {
	bad := func(field, format string, a ...any) error {
		return &InvalidServiceError{Namespace: s.Namespace, Name: s.Name, Field: field, Reason: fmt.Sprintf(format, a...)}
	}
	if !IsDNSLabel(s.Namespace) {
		return bad("metadata.namespace", "%q is not an RFC 1123 label", s.Namespace)
	}
	if !IsServiceName(s.Name) {
		return bad("metadata.name", "%q is not an RFC 1035 label", s.Name)
	}
	for i, ip := range s.ExternalIPs {
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() || ip.Zone() != "" {
			return bad(fmt.Sprintf("externalIPs[%d]", i), "%s is not a usable unicast address", ip)
		}
	}
	for i, r := range s.SourceRanges {
		if !r.IsValid() || r.Addr().Zone() != "" || r != r.Masked() {
			return bad(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "%s is not a masked CIDR", r)
		}
	}
	switch s.Affinity {
	case AffinityNone:
	case AffinityClientIP:
		if s.AffinityTimeout <= 0 || s.AffinityTimeout > MaxAffinityTimeout {
			return bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%v is outside 1s..%v", s.AffinityTimeout, MaxAffinityTimeout)
		}
	default:
		return bad("spec.sessionAffinity", "unknown mode %q", s.Affinity)
	}
	seen := map[string]bool{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.Port == 0 {
			return bad(f+".port", "0 is outside 1-65535")
		}
		if _, err := ParseProtocol(string(p.Protocol)); err != nil || p.Protocol == "" {
			return bad(f+".protocol", "unknown protocol %q", p.Protocol)
		}
		if p.Name != "" && !IsDNSLabel(p.Name) {
			return bad(f+".name", "%q is not an RFC 1123 label", p.Name)
		}
		if p.Name == "" && len(s.Ports) > 1 {
			return bad(f+".name", "a port of a multi-port service must be named")
		}
		if seen[p.String()] {
			return bad(f, "duplicate port %s", p)
		}
		seen[p.String()] = true
		for j, e := range p.Endpoints {
			ef := fmt.Sprintf("%s.endpoints[%d]", f, j)
			if !e.IP.IsValid() || e.IP.IsUnspecified() || e.IP.IsMulticast() || e.IP.Zone() != "" {
				return bad(ef+".ip", "%s is not a usable unicast address", e.IP)
			}
			if e.Port == 0 {
				return bad(ef+".port", "0 is outside 1-65535")
			}
		}
	}
	return nil
}
