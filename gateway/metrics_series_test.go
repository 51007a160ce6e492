package gateway

import (
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Regression test for issue 12: the lean per-tool series (callSeries, in
// place of client_golang's vecs) expose what a prometheus.Histogram would:
// cumulative buckets where a duration equal to a bound counts in that
// bound's bucket, +Inf only in the count, the sum, and the ok counter.
func TestCallSeriesHistogram(t *testing.T) {
	t.Parallel()
	m := &metrics{
		okDesc:       prometheus.NewDesc("credgate_tool_calls_total", "h", []string{fieldUpstream, fieldTool, labelType, fieldSubtype}, nil),
		durationDesc: prometheus.NewDesc("credgate_tool_call_duration_seconds", "h", []string{fieldUpstream, fieldTool}, nil),
	}
	s := &callSeries{upstream: "u", label: "u__t"}
	m.series.Store([2]string{"u", "u__t"}, s)
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ref", Buckets: callDurationBuckets[:]})
	obs := []float64{0, .005, .0051, 1, 2.5, 299.9, 300, 301, 1e9}
	var wg sync.WaitGroup
	for _, d := range obs {
		wg.Go(func() { s.observe(d); s.ok.Add(1) })
		ref.Observe(d)
	}
	wg.Wait()

	reg := prometheus.NewPedanticRegistry()
	// As in newMetrics: the failures' CounterVec registers the ok series' name.
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "credgate_tool_calls_total", Help: "h"}, []string{fieldUpstream, fieldTool, labelType, fieldSubtype})
	reg.MustRegister(failures, callCollector{m})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]any{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			if h := mt.GetHistogram(); h != nil {
				got["count"], got["sum"] = h.GetSampleCount(), h.GetSampleSum()
				var b []uint64
				for _, bk := range h.GetBucket() {
					b = append(b, bk.GetCumulativeCount())
				}
				got["buckets"] = b
			} else {
				got["ok"] = mt.GetCounter().GetValue()
			}
		}
	}
	rm := new(dto.Metric)
	if err := ref.Write(rm); err != nil {
		t.Fatal(err)
	}
	var wantB []uint64
	for _, bk := range rm.GetHistogram().GetBucket() {
		wantB = append(wantB, bk.GetCumulativeCount())
	}
	want := map[string]any{"count": uint64(len(obs)), "sum": rm.GetHistogram().GetSampleSum(), "buckets": wantB, "ok": float64(len(obs))}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}
