package daemon

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// The files of hack/monitoring that name lbd's metrics.
const (
	alertsFile    = "../hack/monitoring/lbd-alerts.yaml"
	dashboardFile = "../hack/monitoring/lbd-dashboard.json"
)

// PromQL is not parsed with Prometheus' own parser (its module pulls in
// most of Prometheus); metricNames takes the metric names out of an
// expression with the language's lexical rules instead: strings, label
// matchers, ranges and the label lists of by/without/on/ignoring/
// group_left/group_right are removed, and what remains of an identifier
// that no "(" follows (a function or an aggregation) and that is no
// keyword is a metric name. Grafana's $variables are skipped.
var (
	promStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promTokens   = regexp.MustCompile(`\$\{?\w+\}?|[0-9][\w.]*|[A-Za-z_:][\w:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true}
)

// metricNames returns the metric names expr selects, sorted, once each.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, " ")
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range promTokens.FindAllStringIndex(e, -1) {
		tok := e[loc[0]:loc[1]]
		if tok[0] == '$' || (tok[0] >= '0' && tok[0] <= '9') || promKeywords[tok] {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	sort.Strings(out)
	return out
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`time() - lbd_last_success_timestamp_seconds > 900`, []string{"lbd_last_success_timestamp_seconds"}},
		{`sum by (instance) (increase(lbd_syncs_total{result=~"held|refused"}[15m])) > 0`, []string{"lbd_syncs_total"}},
		{`histogram_quantile(0.95, sum by (le, phase) (rate(lbd_sync_phase_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"lbd_sync_phase_seconds_bucket"}},
		{`sum(rate(a_sum[5m])) / sum(rate(a_count[5m])) and on (instance) b == bool 1 unless c offset 1h`, []string{"a_count", "a_sum", "b", "c"}},
		{`sum(x) without (pool) * on (i) group_left (pool) y{l="}{"}`, []string{"x", "y"}},
		{`label_values(lbd_build_info{job=~"$job"}, instance)`, []string{"instance", "lbd_build_info"}},
		{`rate(process_cpu_seconds_total[1m]) > 1e3`, []string{"process_cpu_seconds_total"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, metricNames(tt.expr)); diff != "" {
			t.Errorf("metricNames(%s) (-want +got):\n%s", tt.expr, diff)
		}
	}
}

// registeredNames returns every metric name lbd's registries serve, with
// the _bucket, _sum and _count series of histograms and summaries, after
// touching every vector so that each family appears.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	m := NewMetrics(time.Hour, time.Now)
	m.syncs.WithLabelValues("ok")
	m.phaseDuration.WithLabelValues("discover")
	m.discoveryErrors.WithLabelValues("iptables")
	m.applyErrors.WithLabelValues("haproxy")
	m.services.WithLabelValues("programmed")
	m.poolAddresses.WithLabelValues("192.0.2.0/24", "free")
	names := map[string]bool{}
	for _, g := range []interface {
		Gather() ([]*dto.MetricFamily, error)
	}{m.reg, m.runtime} {
		fams, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			n := f.GetName()
			names[n] = true
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				names[n+"_sum"], names[n+"_count"] = true, true
			}
		}
	}
	for _, want := range []string{"lbd_syncs_total", "lbd_pool_addresses", "lbd_build_info", "go_goroutines", "process_cpu_seconds_total"} {
		if !names[want] {
			t.Fatalf("the registries lack %s: the touch list above is out of date", want)
		}
	}
	return names
}

// ruleFile is the part of a Prometheus rule file the test reads.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleExprs parses a rule file strictly and returns each rule's
// expression by its name, or the problems found.
func ruleExprs(b []byte) (map[string]string, []string) {
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		return nil, []string{"parse: " + err.Error()}
	}
	var bad []string
	out := map[string]string{}
	if len(rf.Groups) == 0 {
		bad = append(bad, "no groups")
	}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			bad = append(bad, "group "+g.Name+": a name and rules are required")
		}
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			switch {
			case (r.Alert == "") == (r.Record == ""):
				bad = append(bad, name+": exactly one of alert and record")
			case strings.TrimSpace(r.Expr) == "":
				bad = append(bad, name+": no expr")
			case strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")"), strings.Count(r.Expr, "{") != strings.Count(r.Expr, "}"),
				strings.Count(r.Expr, "[") != strings.Count(r.Expr, "]"):
				bad = append(bad, name+": unbalanced brackets in expr")
			case r.Alert != "" && (r.Labels["severity"] == "" || r.Annotations["summary"] == ""):
				bad = append(bad, name+": an alert needs labels.severity and annotations.summary")
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					bad = append(bad, name+": for: "+err.Error())
				}
			}
			if _, dup := out[name]; dup {
				bad = append(bad, name+": listed twice")
			}
			out[name] = r.Expr
		}
	}
	return out, bad
}

// dashboardExprs returns the expressions of a Grafana dashboard's panel
// targets (rows' nested panels included) and template queries, by where
// they are.
func dashboardExprs(t *testing.T, b []byte) map[string]string {
	t.Helper()
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out["panel "+p.Title+" "+tg.RefID] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("variable %s: query: %v", v.Name, err)
			}
			q.Query = s
		}
		// label_values(METRIC, LABEL): the label is no metric.
		out["variable "+v.Name] = regexp.MustCompile(`,\s*\w+\s*\)\s*$`).ReplaceAllString(q.Query, ")")
	}
	return out
}

// unknownMetrics returns, for each expression, the metric names it uses
// that lbd does not register, and the expressions that name no metric
// (a sign that metricNames missed them).
func unknownMetrics(exprs map[string]string, known map[string]bool) []string {
	var bad []string
	for where, e := range exprs {
		names := metricNames(e)
		if len(names) == 0 {
			bad = append(bad, where+": names no metric: "+e)
		}
		for _, n := range names {
			if !known[n] {
				bad = append(bad, where+": "+n+" is not one of lbd's metrics")
			}
		}
	}
	sort.Strings(bad)
	return bad
}

// TestMonitoringUsesLbdMetrics: the alert rules of hack/monitoring parse
// as a Prometheus rule file, cover what an operator must hear of, and they
// and the dashboard name only metrics lbd registers.
func TestMonitoringUsesLbdMetrics(t *testing.T) {
	known := registeredNames(t)
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	rules, bad := ruleExprs(b)
	for _, p := range bad {
		t.Errorf("%s: %s", alertsFile, p)
	}
	for _, want := range []string{"LbdNoSuccessfulSync", "LbdWatchDown", "LbdGuardHoldingDeletions", "LbdServicesPending",
		"LbdPoolExhausted", "LbdHaproxyReloadFailed", "LbdDiscoveryFailing"} {
		if _, ok := rules[want]; !ok {
			t.Errorf("%s lacks the alert %s", alertsFile, want)
		}
	}
	for _, p := range unknownMetrics(rules, known) {
		t.Errorf("%s: %s", alertsFile, p)
	}

	b, err = os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dash := dashboardExprs(t, b)
	if len(dash) < 15 {
		t.Errorf("%s: only %d expressions found; is the JSON's shape still panels[].targets[].expr?", dashboardFile, len(dash))
	}
	for _, p := range unknownMetrics(dash, known) {
		t.Errorf("%s: %s", dashboardFile, p)
	}
	used := map[string]bool{}
	for _, e := range dash {
		for _, n := range metricNames(e) {
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
		}
	}
	for n := range known {
		if strings.HasPrefix(n, "lbd_") && !strings.HasSuffix(n, "_bucket") && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") && !used[n] {
			t.Errorf("%s shows no panel of %s", dashboardFile, n)
		}
	}
}

// TestUnknownMetricIsCaught: a rule that names a metric lbd lacks is
// reported, and so is a rule that is not YAML.
func TestUnknownMetricIsCaught(t *testing.T) {
	known := registeredNames(t)
	rules, bad := ruleExprs([]byte(`groups:
  - name: x
    rules:
      - alert: Typo
        expr: time() - lbd_last_sucess_timestamp_seconds > 900 and lbd_watch_up == 0
        for: 5m
        labels: {severity: warning}
        annotations: {summary: s}
`))
	if len(bad) > 0 {
		t.Fatalf("ruleExprs: %q", bad)
	}
	want := []string{"Typo: lbd_last_sucess_timestamp_seconds is not one of lbd's metrics"}
	if diff := cmp.Diff(want, unknownMetrics(rules, known)); diff != "" {
		t.Errorf("unknownMetrics (-want +got):\n%s", diff)
	}
	if _, bad := ruleExprs([]byte("groups:\n  - name: x\n    rules:\n      - alert: A\n        exrp: up\n")); len(bad) == 0 {
		t.Error("a misspelt key (exrp) parsed")
	}
}
