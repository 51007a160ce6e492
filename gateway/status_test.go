package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Regression tests for issue 10 (the status page, static render).

func getPage(t *testing.T, url string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b), resp.Header
}

// A revoked credential's card is red and names the tools affected; the page
// is the same at / and /status, carries its last event id for the live
// script, and shows no secret.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, base, up := valueTokGateway(t, ctx, "", "tok-0123456789")
	page, h := getPage(t, base+"/status")
	for _, want := range []string{`data-credential="tok" data-status="healthy"`, `data-upstream="api" data-status="up"`, "No routes configured."} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'nonce-") || !strings.Contains(page, `<script nonce="`) {
		t.Errorf("CSP %q without the script's nonce", csp)
	}
	up.refuse("tok-0123456789", rejectRevoked)
	callTool(t, ctx, cs, "api__echo")
	for _, path := range []string{"/status", "/"} {
		page, _ = getPage(t, base+path)
		card := regexp.MustCompile(`(?s)<div class="card bad" data-credential="tok" data-status="revoked">.*?</div>\s*</div>`).FindString(page)
		if card == "" || !strings.Contains(card, `tools affected: <code>api__*</code>`) {
			t.Errorf("%s: revoked card missing or without the tools affected:\n%s", path, card)
		}
		if !strings.Contains(page, `credential revoked`) || !strings.Contains(page, `breaker open`) {
			t.Errorf("%s: last events lack the revocation and the breaker", path)
		}
		if m := regexp.MustCompile(`data-last-id="(\d+)"`).FindStringSubmatch(page); m == nil || m[1] == "0" {
			t.Errorf("%s: no last event id", path)
		}
		if strings.Contains(page, "tok-0123456789") {
			t.Errorf("%s shows the token", path)
		}
	}
	if len(g.EventLog()) == 0 {
		t.Error("no events")
	}
}

func TestTTLBar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ttl  time.Duration
		want int
	}{{-time.Second, 0}, {0, 0}, {time.Second, 5}, {time.Minute, 28}, {24 * time.Hour, 77}, {30 * 24 * time.Hour, 100}, {365 * 24 * time.Hour, 100}} {
		if got := ttlBar(tc.ttl); got != tc.want {
			t.Errorf("ttlBar(%s) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
	if got := humanTTL(26*time.Hour + 5*time.Minute); got != "1d 2h" {
		t.Errorf("humanTTL = %q", got)
	}
}

// A usable credential whose source failed its last read (its file removed,
// the value kept) shows that failure on its card: it was shown only for an
// unusable or expiring credential (found trying the gateway).
func TestStatusPageShowsUsableCredentialsError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newBearerUpstream(t, "echo")
	up.accept("file-token-0123456789")
	path := tokenFile(t, "file-token-0123456789")
	g, _, base := credGateway(t, ctx, fmt.Sprintf("credentials:\n  ftok: {source: {file: %s}}\nupstreams:\n  api: {url: %s, credential: ftok}\n", path, up.url()), nil, nil)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return g.Credentials().Get("ftok").Snapshot(false).LastError != nil })
	page, _ := getPage(t, base+"/status")
	card := regexp.MustCompile(`(?s)<div class="card[^"]*" data-credential="ftok" data-status="healthy">.*?</div>\s*</div>`).FindString(page)
	if !strings.Contains(card, "does not exist") {
		t.Errorf("the healthy card does not show its source's failure:\n%s", card)
	}
}
