package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// asOfSuccess are the gauge families that hold the state of the last
// successful sync: a process that has not had one yet (a failed cron
// pass) keeps the values the file had.
var asOfSuccess = map[string]bool{
	"lbd_last_success_timestamp_seconds": true,
	"lbd_services":                       true,
	"lbd_endpoints":                      true,
	"lbd_pool_addresses":                 true,
	"lbd_services_pending":               true,
}

// daemonOnly are the families only lbd run's loop sets: a cron pass
// writes none of them (its lbd_watch_up would say 0 and page).
var daemonOnly = map[string]bool{
	"lbd_watch_up":             true,
	"lbd_watch_restarts_total": true,
}

// textfile is the state of [Metrics.WriteTextfile]: the families the file
// held when this process first wrote it, which its counters continue.
type textfile struct {
	mu   sync.Mutex
	path string
	base map[string]*dto.MetricFamily
}

// WriteTextfile writes lbd's metric families (lbd_*, not the process and
// Go ones, which node_exporter has of its own) to path, in the text
// format of node_exporter's textfile collector, atomically: a temporary
// file in path's directory (its name does not end in .prom, so the
// collector never reads it half written), fsync, mode 0644, rename, fsync
// of the directory.
//
// The file outlives the process, and cron runs one process per pass, so
// the file carries on across processes: its counters and histograms are
// the values the file held when this process first wrote it plus this
// process's own (rate and increase work over cron passes; a file that is
// missing or does not parse starts them at 0, which Prometheus reads as a
// counter reset). The gauges of the last successful sync
// (lbd_last_success_timestamp_seconds, lbd_services, lbd_endpoints,
// lbd_pool_addresses, lbd_services_pending) keep the file's values until
// this process has a successful sync. lbd_watch_up and
// lbd_watch_restarts_total are written only by the daemon ([New] marks its
// Metrics). Safe for concurrent use.
func (m *Metrics) WriteTextfile(path string) error {
	m.text.mu.Lock()
	defer m.text.mu.Unlock()
	if m.text.path != path {
		m.text.path, m.text.base = path, readTextfile(path)
	}
	cur, err := m.reg.Gather()
	if err != nil {
		return fmt.Errorf("metrics textfile %s: gather: %w", path, err)
	}
	var b bytes.Buffer
	for _, f := range mergeFamilies(m.text.base, cur, m.health.succeeded(), m.inDaemon.Load()) {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			return fmt.Errorf("metrics textfile %s: family %s: %w", path, f.GetName(), err)
		}
	}
	if err := writeFileAtomic(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("metrics textfile: %w", err)
	}
	return nil
}

// readTextfile returns the families of the text-format file at path, or
// nil when it is missing or does not parse.
func readTextfile(path string) map[string]*dto.MetricFamily {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	return fams
}

// mergeFamilies returns cur continued from base, as WriteTextfile
// describes, sorted by name. succeeded: this process has had a successful
// sync; daemon: the daemon's families are written. It changes cur's
// metrics in place and never base's.
func mergeFamilies(base map[string]*dto.MetricFamily, cur []*dto.MetricFamily, succeeded, daemon bool) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	seen := map[string]bool{}
	for _, f := range cur {
		name := f.GetName()
		seen[name] = true
		if daemonOnly[name] && !daemon {
			continue
		}
		b := base[name]
		switch {
		case asOfSuccess[name] && !succeeded && b != nil && b.GetType() == f.GetType():
			out = append(out, b)
		case f.GetType() == dto.MetricType_COUNTER || f.GetType() == dto.MetricType_HISTOGRAM:
			out = append(out, continueFamily(b, f))
		default:
			out = append(out, f)
		}
	}
	for name, b := range base {
		if seen[name] || (daemonOnly[name] && !daemon) {
			continue
		}
		switch {
		case asOfSuccess[name] && !succeeded,
			b.GetType() == dto.MetricType_COUNTER, b.GetType() == dto.MetricType_HISTOGRAM:
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// continueFamily adds base's values to cur's series with the same labels
// and appends base's series that cur lacks, in the order of their labels. A base of another type is
// ignored, and so is a histogram series whose buckets differ.
func continueFamily(base, cur *dto.MetricFamily) *dto.MetricFamily {
	if base == nil || base.GetType() != cur.GetType() {
		return cur
	}
	byLabels := map[string]*dto.Metric{}
	for _, m := range cur.Metric {
		byLabels[labelKey(m)] = m
	}
	for _, bm := range base.Metric {
		m, ok := byLabels[labelKey(bm)]
		if !ok {
			cur.Metric = append(cur.Metric, bm)
			continue
		}
		switch cur.GetType() {
		case dto.MetricType_COUNTER:
			v := m.GetCounter().GetValue() + bm.GetCounter().GetValue()
			m.Counter.Value = &v
		case dto.MetricType_HISTOGRAM:
			addHistogram(m.Histogram, bm.GetHistogram())
		}
	}
	sort.SliceStable(cur.Metric, func(i, j int) bool { return labelKey(cur.Metric[i]) < labelKey(cur.Metric[j]) })
	return cur
}

// addHistogram adds b's count, sum and buckets to h when their finite
// bucket bounds are the same (the text format adds a +Inf bucket that a
// Gather leaves out).
func addHistogram(h, b *dto.Histogram) {
	if h == nil || b == nil {
		return
	}
	bounds := func(h *dto.Histogram) []float64 {
		var out []float64
		for _, bk := range h.Bucket {
			if ub := bk.GetUpperBound(); ub < 1e308 {
				out = append(out, ub)
			}
		}
		return out
	}
	if !slices.Equal(bounds(h), bounds(b)) {
		return
	}
	count, sum := h.GetSampleCount()+b.GetSampleCount(), h.GetSampleSum()+b.GetSampleSum()
	h.SampleCount, h.SampleSum = &count, &sum
	for i, bk := range h.Bucket {
		c := bk.GetCumulativeCount() + b.Bucket[i].GetCumulativeCount()
		bk.CumulativeCount = &c
	}
}

// labelKey identifies a series within its family by its labels.
func labelKey(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"\x00"+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x01")
}

// writeFileAtomic replaces path with b: a temporary file in the same
// directory, written, synced and given mode perm, is renamed over it, and
// the directory is synced.
func writeFileAtomic(path string, b []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err // CreateTemp names the directory
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err // Rename names both paths
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
