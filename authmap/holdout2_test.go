package authmap

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHoldout2 runs a second set of samples written blind (before reading the rules) from the
// providers' documented and captured formats: other endpoints, messages and controls than
// corpus.json and holdout.json. It mirrors TestHoldout. A sample with status 0 (or null) is text
// the gateway sees without an HTTP status (an MCP tool result or error message): it goes through
// ClassifyText, and text ClassifyText does not recognise counts as the caller's generic upstream_error.
func TestHoldout2(t *testing.T) {
	t.Parallel()
	c, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	samples := loadSamples(t, "testdata/holdout2.json")
	var pass, falseAlarms, controls, auth, authPass int
	for _, s := range samples {
		if s.Status != nil && *s.Status == 0 {
			s.Status = nil
		}
		isControl := s.Expected.Type != TypeAuthFailure
		if isControl {
			controls++
		} else {
			auth++
		}
		f, ok := classifySample(t, c, s, "")
		if !ok && s.Status == nil {
			f, ok = Failure{Type: TypeUpstreamError}, true
		}
		if isControl && f.IsAuth() {
			falseAlarms++
		}
		ok = t.Run(s.ID, func(t *testing.T) {
			if !ok {
				t.Fatalf("%s: not classified as a failure", s.ID)
			}
			want := outcome{Type: s.Expected.Type, Retryable: s.Expected.Retryable}
			got := outcome{Type: f.Type, Retryable: f.Retryable}
			if s.Expected.Type == TypeAuthFailure {
				want.Subtype, got.Subtype = Subtype(*s.Expected.Subtype), f.Subtype
				if slices.Contains(s.Expected.AlsoAccept, f.Subtype) {
					want.Subtype = f.Subtype
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s\nfailure: %+v", diff, f)
			}
		})
		if ok {
			pass++
			if !isControl {
				authPass++
			}
		}
	}
	t.Logf("holdout2: %d/%d pass (%.1f%%); auth %d/%d (%.1f%%); %d controls, %d false alarms",
		pass, len(samples), 100*float64(pass)/float64(len(samples)), authPass, auth, 100*float64(authPass)/float64(auth), controls, falseAlarms)
	if falseAlarms > 0 {
		t.Errorf("%d controls classified as auth_failure", falseAlarms)
	}
}
