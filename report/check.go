package report

import (
	"fmt"
	"io"

	"github.com/lbd/lbd/hostcheck"
)

// WriteCheck writes the verdicts of lbd check, one line each
// ("ok   ip_forward: 1"), or in format "json" as {"ok": all ok,
// "verdicts": [...]}; any other format is the table. It returns whether
// every verdict is ok.
func WriteCheck(w io.Writer, format string, verdicts []hostcheck.Verdict) (ok bool, err error) {
	ok = true
	for _, v := range verdicts {
		ok = ok && v.OK
	}
	if format != "json" {
		for _, v := range verdicts {
			if _, err := fmt.Fprintln(w, v); err != nil {
				return ok, err
			}
		}
		return ok, nil
	}
	type jsonVerdict struct {
		Check  string `json:"check"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	}
	out := struct {
		OK       bool          `json:"ok"`
		Verdicts []jsonVerdict `json:"verdicts"`
	}{OK: ok, Verdicts: []jsonVerdict{}}
	for _, v := range verdicts {
		out.Verdicts = append(out.Verdicts, jsonVerdict{v.Check, v.OK, v.Detail})
	}
	return ok, writeJSON(w, out)
}
