package report

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// checkFormat accepts the formats of -o: table (also "") and json.
func checkFormat(format string) error {
	switch format {
	case "json", "table", "":
		return nil
	}
	return fmt.Errorf("-o %q: want table or json", format)
}

// writeJSON writes v as one JSON document indented by two spaces.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// orDash is s, or none for an empty s.
func orDash(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// addrOrNone prints an address, or "-" for a service without one.
func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

// presence is "present" or "missing".
func presence(ok bool) string {
	if ok {
		return "present"
	}
	return "missing"
}

// ranges prints source ranges, "any client" for none.
func ranges(rs []netip.Prefix) string {
	if len(rs) == 0 {
		return "any client"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}
