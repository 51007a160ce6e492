package authmap

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"testing"
)

// FuzzClassify checks that Classify and ClassifyText never panic and never call a 5xx, 404 or 422
// an auth_failure. The one documented exception is npm's 404 with an "expired or revoked" notice.
// ClassifyStructured never finds a failure in text without a document (issue 6 item 1).
func FuzzClassify(f *testing.F) {
	for _, file := range []string{"testdata/corpus.json", "testdata/holdout.json", "testdata/holdout2.json", "testdata/holdout3.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, s := range mustSamples(f, data) {
			st := 0
			if s.Status != nil {
				st = *s.Status
			}
			hv := ""
			for _, v := range s.Headers {
				hv = v
			}
			f.Add(st, hv, []byte(s.Body))
		}
	}
	f.Add(503, "Bearer error=\"invalid_token\"", []byte(`{"error":"invalid_grant"}`))
	f.Add(404, "0", []byte(`{"message":"Bad credentials"}`))
	f.Add(422, "60", []byte("Authentication Failed: Bad credentials"))
	c, err := New(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, status int, hv string, body []byte) {
		h := http.Header{}
		for _, name := range []string{"Www-Authenticate", "Retry-After", "X-Ratelimit-Remaining", "X-Ratelimit-Reset",
			"X-Amzn-Errortype", "X-Github-Sso", "Npm-Notice", "Anthropic-Ratelimit-Tokens-Reset", "Server"} {
			h.Set(name, hv)
		}
		r := Response{Status: status, Header: h, Body: body}
		fl, ok := c.Classify(r, Knowledge{Secrets: []string{hv}})
		if ok && fl.IsAuth() && nonAuthStatus(status) && !npmAuthNotice(h, body) {
			t.Errorf("status %d classified as %s/%s", status, fl.Type, fl.Subtype)
		}
		if ok && fl.RetryAfterSeconds != nil && *fl.RetryAfterSeconds < 0 {
			t.Errorf("negative retry_after_seconds %d", *fl.RetryAfterSeconds)
		}
		_ = fl.Error()
		_, _ = c.ClassifyText(string(body), hv, Knowledge{})
		if fl, ok := c.ClassifyStructured(string(body), hv, Knowledge{}); ok && !bytes.ContainsAny(body, "{<") {
			t.Errorf("ClassifyStructured(%q) = %+v from text without a document", body, fl)
		}
		_ = Redact(string(body), []string{hv})
	})
}

func mustSamples(f *testing.F, data []byte) []sample {
	var out []sample
	if err := json.Unmarshal(data, &out); err != nil {
		f.Fatal(err)
	}
	return out
}
