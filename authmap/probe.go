package authmap

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultProbeTimeout bounds one HTTP probe when the client has no timeout of its own.
const DefaultProbeTimeout = 15 * time.Second

// ProbeResult is what a probe learned about a value.
type ProbeResult struct {
	// Failure is the classified answer when it was not the expected one. A
	// credential_missing, _invalid, _expired or _revoked failure rejects the
	// value; other failures (a 5xx, a missing scope on the probe URL) are
	// recorded as the last error without rejecting it. Nil: the value works.
	Failure *Failure
	// ExpiresAt is an expiry the provider announced on the answer (see
	// [ExpiryFromHeader]). Zero: none.
	ExpiresAt time.Time
}

// ProbeFunc checks a candidate value against the provider. An error means
// the probe could not run (the provider unreachable): the check is
// inconclusive and the value is adopted.
type ProbeFunc func(ctx context.Context, value string) (ProbeResult, error)

// HTTPProbe returns the probe of probe.http: a GET of cfg.URL with the value
// injected as inject says (a bearer token for an env injection), expecting
// cfg.Expect (200 if zero). Any other answer is classified with classifier
// (nil: the built-in rules). client nil: one with a 15s timeout.
func HTTPProbe(cfg HTTPProbeConfig, inject InjectConfig, client *http.Client, classifier *Classifier) ProbeFunc {
	if client == nil {
		client = &http.Client{Timeout: DefaultProbeTimeout}
	}
	if classifier == nil {
		classifier, _ = New(nil)
	}
	expect := cfg.Expect
	if expect == 0 {
		expect = http.StatusOK
	}
	header, prefix := inject.HeaderName()
	if header == "" {
		header, prefix = "Authorization", "Bearer "
	}
	return func(ctx context.Context, value string) (ProbeResult, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
		if err != nil {
			return ProbeResult{}, fmt.Errorf("probe %s: %w", cfg.URL, err)
		}
		req.Header.Set(header, prefix+value)
		resp, err := client.Do(req)
		if err != nil {
			return ProbeResult{}, fmt.Errorf("probe: %s", Redact(err.Error(), []string{value}))
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		var res ProbeResult
		res.ExpiresAt, _ = ExpiryFromHeader(resp.Header)
		if resp.StatusCode == expect {
			return res, nil
		}
		k := Knowledge{Secrets: []string{value}}
		f, ok := classifier.Classify(Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, k)
		if !ok {
			f = Failure{Type: TypeUpstreamError}
		}
		if f.Detail == "" {
			f.Detail = fmt.Sprintf("probe %s answered %d, want %d", cfg.URL, resp.StatusCode, expect)
		} else {
			f.Detail = fmt.Sprintf("probe %s answered %d: %s", cfg.URL, resp.StatusCode, f.Detail)
		}
		res.Failure = &f
		return res, nil
	}
}
