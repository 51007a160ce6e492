package e2e

// The status page (issue 10) in a real browser: Debian's chromium, headless,
// driven by chromedp. `make test` installs chromium when it is missing; run
// alone, the test skips without it unless CI or E2E_REQUIRE_BROWSER is
// set.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// chromiumPath finds Debian's chromium (or another Chrome), or skips.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" || os.Getenv("E2E_REQUIRE_BROWSER") != "" {
		t.Fatal("chromium is not installed: `make test` installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed: run `make browser-deps` (apt-get install chromium), or `make test`")
	return ""
}

// browser starts a headless chromium with a fresh profile; it ends with the test.
func browser(t *testing.T, ctx context.Context, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // waits for chromium to exit
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// tokenUpstream is an MCP server over HTTP that accepts only the bearer
// tokens it was told to: the provider side of a revocation.
type tokenUpstream struct {
	mu    sync.Mutex
	valid map[string]bool
	url   string
}

func newTokenUpstream(t *testing.T) *tokenUpstream {
	u := &tokenUpstream{valid: map[string]bool{}}
	s := mcp.NewServer(&mcp.Implementation{Name: "token-upstream", Version: "1"}, nil)
	type args struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes text"}, func(_ context.Context, _ *mcp.CallToolRequest, a args) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		u.mu.Lock()
		ok := u.valid[tok]
		u.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="The access token has been revoked"`)
			http.Error(w, `{"error":"invalid_token","error_description":"The access token has been revoked"}`, http.StatusUnauthorized)
			return
		}
		mcpHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL + "/mcp"
	return u
}

func (u *tokenUpstream) set(tok string, ok bool) {
	u.mu.Lock()
	u.valid[tok] = ok
	u.mu.Unlock()
}

// screenshot saves the page under the test's artifact directory (kept with
// go test -artifacts) and, when set, $TEST_OUTPUT.
func screenshot(t *testing.T, bctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	dirs := []string{t.ArtifactDir()}
	if d := os.Getenv("TEST_OUTPUT"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Errorf("screenshot: %v", err)
			continue
		}
		t.Logf("screenshot: %s", p)
	}
}

// cardState is what a person sees of a credential's card.
type cardState struct {
	Status string `json:"status"`
	Text   string `json:"text"`
	Badge  string `json:"badge"` // the status badge's background colour
	Border string `json:"border"`
}

const readCard = `(() => {
  const c = document.querySelector('[data-credential="api"]');
  if (!c) return {status: "", text: "", badge: "", border: ""};
  return {status: c.dataset.status, text: c.innerText,
          badge: getComputedStyle(c.querySelector('.badge')).backgroundColor,
          border: getComputedStyle(c).borderLeftColor};
})()`

// waitCard polls the page (in the browser, no reload) until the card's
// status is want.
func waitCard(t *testing.T, ctx, bctx context.Context, want string) cardState {
	t.Helper()
	var st cardState
	err := poll(ctx, func() (bool, error) {
		var err error
		if st, err = chromedp.Run(bctx, chromedp.Evaluate[cardState](readCard)); err != nil {
			return false, err
		}
		return st.Status == want, nil
	})
	if err != nil {
		t.Fatalf("the card never showed %s: %v (last: %+v)", want, err, st)
	}
	return st
}

// Acceptance (issue 10, status page): in a real browser on a phone-sized
// window, a credential revoked by its provider turns red and names the tools
// affected, and its rotation shows on the open page without a reload.
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	up := newTokenUpstream(t)
	up.set("browser-token-one-0123456789", true)
	path := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, "browser-token-one-0123456789")
	gw := startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {file: %s}}
upstreams:
  up: {url: %s, credential: api}
`, path, up.url))
	bctx := browser(t, ctx, 390, 844)
	page := "http://" + gw.Addr + "/status"
	if err := chromedp.Do(bctx, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS(`[data-credential="api"]`))); err != nil {
		t.Fatal(err)
	}
	if st := waitCard(t, ctx, bctx, "healthy"); st.Badge != "rgb(26, 127, 55)" {
		t.Errorf("healthy badge colour %s, want green", st.Badge)
	}
	// Mark this page load: a reload would lose it.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__sameLoad = true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.Search(`//span[@id="live" and contains(., "● live")]`))); err != nil {
		t.Fatalf("the page never went live on /events: %v", err)
	}

	// The provider revokes the token; an agent's call finds it.
	cs := connectClient(t, ctx, gw.URL)
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
		t.Fatalf("call: %v %v", err, res)
	}
	up.set("browser-token-one-0123456789", false)
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}}); err != nil || !res.IsError {
		t.Fatalf("call with the revoked token: %v %v", err, res)
	}
	st := waitCard(t, ctx, bctx, "revoked")
	if st.Badge != "rgb(207, 34, 46)" || st.Border != "rgb(207, 34, 46)" {
		t.Errorf("revoked card: badge %s, border %s, want red", st.Badge, st.Border)
	}
	if !strings.Contains(st.Text, "tools affected") || !strings.Contains(st.Text, "up__*") {
		t.Errorf("revoked card does not name the tools affected:\n%s", st.Text)
	}
	screenshot(t, bctx, "status-revoked.png")

	// Rotation: the open page shows it, without a reload, because /events
	// told it (not its 30 s refresh of the TTLs).
	liveEvents := `+document.body.dataset.liveEvents || 0`
	before, err := chromedp.Run(bctx, chromedp.Evaluate[int](liveEvents))
	if err != nil {
		t.Fatal(err)
	}
	up.set("browser-token-two-0123456789", true)
	atomicWrite(t, path, "browser-token-two-0123456789")
	st = waitCard(t, ctx, bctx, "healthy")
	sameLoad, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__sameLoad === true`))
	if err != nil {
		t.Fatal(err)
	}
	if after, err := chromedp.Run(bctx, chromedp.Evaluate[int](liveEvents)); err != nil || after <= before {
		t.Errorf("the page got no event from /events for the rotation (%d before, %d after, %v)", before, after, err)
	}
	events, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#events`)))
	if err != nil {
		t.Fatal(err)
	}
	if !sameLoad {
		t.Error("the page was reloaded to show the rotation")
	}
	if !strings.Contains(events, "credential rotated") {
		t.Errorf("the last events do not show the rotation:\n%s", events)
	}
	screenshot(t, bctx, "status-rotated.png")
	html, err := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, "browser-token-") {
		t.Error("the page shows a token")
	}
}
