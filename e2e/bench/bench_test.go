package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDirectSmoke runs the driver's direct side with tiny counts, so `go test
// ./...` exercises the load, classification and report code. It asserts
// counts and error-free calls, never timings.
func TestDirectSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	o := options{calls: 6, sessions: 2, runs: 2, directOnly: true, timeout: time.Minute}
	rep := run(ctx, o, io.Discard)
	if len(rep.Errors) > 0 {
		t.Fatalf("run errors: %q", rep.Errors)
	}
	c := rep.Calls
	if c == nil {
		t.Fatal("no calls report")
	}
	type shape struct {
		Throughput, Latency scenarioShape
		DirectRuns          int
		Variants            int
	}
	want := shape{
		Throughput: scenarioShape{Name: "2x3", Sessions: 2, CallsPerSession: 3},
		Latency:    scenarioShape{Name: "1x6", Sessions: 1, CallsPerSession: 6},
		DirectRuns: 2,
	}
	got := shape{c.Throughput, c.Latency, c.Direct.Runs, len(c.Variants)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls report mismatch (-want +got):\n%s", diff)
	}
	for _, tg := range rep.Targets {
		if tg.Status != "n/a" {
			t.Errorf("target %q = %s without a gateway, want n/a", tg.Name, tg.Status)
		}
	}

	var text bytes.Buffer
	rep.writeText(&text)
	if !strings.Contains(text.String(), "latency at 1x6") {
		t.Errorf("text report lacks scenario 1x6:\n%s", text.String())
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("json: %v", err)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var samples []time.Duration
	for i := 100; i >= 1; i-- {
		samples = append(samples, time.Duration(i)*time.Millisecond)
	}
	s := newStats(samples)
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}} {
		if got := s.percentile(tc.p); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := (stats{}).median(); got != 0 {
		t.Errorf("empty median = %v, want 0", got)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	type shape struct {
		Calls, Runs int
		Profile     bool
	}
	for _, tc := range []struct {
		args    []string
		want    shape
		wantErr bool
	}{
		{nil, shape{1000, 6, true}, false},
		{[]string{"--quick"}, shape{100, 2, false}, false},
		{[]string{"--quick", "--calls", "40", "--runs", "3", "--profile"}, shape{40, 3, true}, false},
		{[]string{"--runs", "1", "--profile=false"}, shape{1000, 1, false}, false},
		{[]string{"--calls", "0"}, shape{}, true},
		{[]string{"--runs", "0"}, shape{}, true},
		{[]string{"--profile-seconds", "100ms"}, shape{}, true},
		{[]string{"extra"}, shape{}, true},
	} {
		o, err := parseFlags(tc.args)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseFlags(%q) error = %v, want error %t", tc.args, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if diff := cmp.Diff(tc.want, shape{o.calls, o.runs, o.profile}); diff != "" {
			t.Errorf("parseFlags(%q) mismatch (-want +got):\n%s", tc.args, diff)
		}
	}
}

func TestFindNextCursor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body, want string
		wantErr    bool
	}{
		{`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"}],"nextCursor":"abc=="}}`, "abc==", false},
		{"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[],\"nextCursor\": \"a\\\"b\\\\\"}}\n\n", `a"b\`, false},
		{`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"}]}}`, "", false},
		{`{"jsonrpc":"2.0","id":2,"result":{"tools":[],"nextCursor":null}}`, "", false},
		{`{"result":{"nextCursor":"abc`, "", true},
		{`{"result":{"nextCursor":5}}`, "", true},
	} {
		got, err := findNextCursor([]byte(tc.body))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("findNextCursor(%q) = %q, %v; want %q, error %t", tc.body, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSSEPayload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, want string }{
		{`{"a":1}`, `{"a":1}`},
		{"event: message\ndata: {\"a\":1}\n\n", `{"a":1}`},
		{"id: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n", "{\"a\":\n1}"},
		{"event: ping\ndata: x\n\ndata: {\"a\":1}\n\n", `{"a":1}`},
	} {
		got, err := ssePayload([]byte(tc.body))
		if err != nil || string(got) != tc.want {
			t.Errorf("ssePayload(%q) = %q, %v; want %q", tc.body, got, err, tc.want)
		}
	}
	if _, err := ssePayload([]byte("event: ping\n\n")); err == nil {
		t.Error("ssePayload without a message event: no error")
	}
}

// TestRawListAll walks an in-process upstream with the raw client and checks
// it agrees with the go-sdk client's walk.
func TestRawListAll(t *testing.T) {
	t.Parallel()
	u, err := startUpstream("catalog", catalogTools(2500))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	raw, err := rawListAll(t.Context(), hc, u.url)
	if err != nil {
		t.Fatalf("rawListAll: %v", err)
	}
	sdk, err := listAll(t.Context(), hc, u.url)
	if err != nil {
		t.Fatalf("listAll: %v", err)
	}
	type shape struct{ Tools, Pages, FirstPage int }
	want := shape{2500, 3, 1000}
	for name, r := range map[string]listResult{"raw": raw, "sdk": sdk} {
		if diff := cmp.Diff(want, shape{r.tools, r.pages, r.firstPage}); diff != "" {
			t.Errorf("%s walk mismatch (-want +got):\n%s", name, diff)
		}
	}
}
