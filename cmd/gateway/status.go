package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/gateway"
)

// statusWatchEvery is how often `gateway status --watch` refreshes.
const statusWatchEvery = 2 * time.Second

// statusCmd prints a running gateway's upstreams and credentials, read from
// its /health: colours on a terminal, plain text otherwise. It exits 0 when
// the gateway is ok, 1 when it is degraded, down or unreachable; with watch
// it refreshes every 2 s until interrupted, and exits 0.
func statusCmd(configPath, rawURL string, watch bool, stdout, stderr io.Writer) int {
	base, err := statusURL(configPath, rawURL)
	if err != nil {
		fmt.Fprintln(stderr, "gateway status:", err)
		return 2
	}
	token, err := statusToken(configPath)
	if err != nil {
		fmt.Fprintln(stderr, "gateway status:", err)
		return 2
	}
	color := isTerminal(stdout)
	if !watch {
		h, err := fetchHealth(context.Background(), base, token)
		if err != nil {
			fmt.Fprintln(stderr, "gateway status:", err)
			return 1
		}
		printStatus(stdout, base, h, time.Now(), color)
		if h.Status != gateway.HealthOK {
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(statusWatchEvery)
	defer tick.Stop()
	for {
		h, err := fetchHealth(ctx, base, token)
		if ctx.Err() != nil {
			return 0
		}
		if color {
			fmt.Fprint(stdout, "\x1b[H\x1b[2J") // home, clear
		} else {
			fmt.Fprintln(stdout, "---")
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s  %v (retrying every %s)\n", time.Now().UTC().Format(time.RFC3339), err, statusWatchEvery)
		} else {
			printStatus(stdout, base, h, time.Now(), color)
		}
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
}

// statusURL is the gateway's base URL: --url, else the config's
// admin.listen (where /health is served when it is set) or listen address
// (a wildcard host read as 127.0.0.1; https when the config sets tls), else
// the default listen.
func statusURL(configPath, rawURL string) (string, error) {
	if rawURL != "" {
		u := strings.TrimRight(strings.TrimSuffix(strings.TrimRight(rawURL, "/"), "/health"), "/")
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return "", fmt.Errorf("--url %q: want http(s)://host:port", rawURL)
		}
		return u, nil
	}
	listen, scheme := gateway.DefaultListen, "http"
	if configPath != "" {
		cfg, err := loadConfig(configPath)
		if err != nil {
			return "", fmt.Errorf("%v\n(or give the gateway's address with --url)", err)
		}
		listen, scheme = cfg.Listen, cfg.Scheme()
		if cfg.Admin.Listen != "" {
			listen = cfg.Admin.Listen
		}
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen %q: %v", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// adminTokenEnv is the variable gateway status reads admin.token from
// when no config is given: the config override of admin.token.
const adminTokenEnv = gateway.EnvPrefix + "ADMIN__TOKEN"

// statusToken reads the config's admin.token, which /health wants when it
// is set (issue 9), else adminTokenEnv; "" without either.
func statusToken(configPath string) (string, error) {
	if configPath == "" {
		return os.Getenv(adminTokenEnv), nil
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return "", err
	}
	src, err := cfg.Admin.Token.Open("admin.token", nil)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), authmap.DefaultExecTimeout)
	defer cancel()
	return authmap.FetchSecret(ctx, src)
}

func fetchHealth(ctx context.Context, base, token string) (gateway.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var h gateway.Health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return h, err
	}
	if token != "" { // /health is an ops endpoint
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return h, fmt.Errorf("GET %s/health: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		why := "the gateway wants its admin.token: pass its config (gateway status --config FILE) or set " + adminTokenEnv
		if token != "" {
			why = "the gateway refused the admin.token sent"
		}
		return h, fmt.Errorf("GET %s/health: %s: %s", base, resp.Status, why)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return h, fmt.Errorf("GET %s/health: %s", base, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&h); err != nil {
		return h, fmt.Errorf("GET %s/health: %w", base, err)
	}
	return h, nil
}

// ANSI colours.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
)

// cell is one table cell: its text and colour (ANSI, "" for none).
type cell struct{ text, color string }

// table prints rows aligned on the text's width, colouring cells only when
// color is set (tabwriter would count the escape codes as width).
func table(w io.Writer, header []string, rows [][]cell, color bool) {
	for _, r := range rows {
		for i := range r {
			r[i].text = printable(r[i].text)
		}
	}
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	line := func(cells []cell) {
		var b strings.Builder
		for i, c := range cells {
			text := c.text
			if i < len(cells)-1 {
				text += strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+2)
			}
			if color && c.color != "" {
				text = c.color + text + ansiReset
			}
			b.WriteString(text)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	hc := make([]cell, len(header))
	for i, h := range header {
		hc[i] = cell{h, ansiBold}
	}
	line(hc)
	for _, r := range rows {
		line(r)
	}
}

func stateColor(s string) string {
	switch s {
	case gateway.HealthOK, gateway.StatusUp, "healthy", "closed":
		return ansiGreen
	case gateway.HealthDegraded, gateway.StatusConnecting, "expiring", "rate_limited", "half-open", "unknown":
		return ansiYellow
	}
	return ansiRed
}

func printStatus(w io.Writer, base string, h gateway.Health, now time.Time, color bool) {
	st := h.Status
	if color {
		st = ansiBold + stateColor(h.Status) + st + ansiReset
	}
	sessions := "sessions"
	if h.Sessions == 1 {
		sessions = "session"
	}
	fmt.Fprintf(w, "credgate %s at %s: %s (%d upstreams, %d agent %s) %s\n\n", printable(h.Version), printable(base), st, len(h.Upstreams), h.Sessions, sessions, now.UTC().Format(time.RFC3339))

	if st := h.State; st != nil && st.Status != "ok" {
		// Why the gateway is degraded when nothing below says so.
		since := ""
		if st.Since != nil {
			since = " for " + shortDuration(now.Sub(*st.Since))
		}
		line := fmt.Sprintf("shared state (%s): %s%s: %s", st.Backend, st.Status, since, oneLine(st.LastError, 200))
		if color {
			line = ansiYellow + line + ansiReset
		}
		fmt.Fprintf(w, "%s\n\n", line)
	}

	names := slices.Sorted(maps.Keys(h.Upstreams))
	var rows [][]cell
	for _, n := range names {
		u := h.Upstreams[n]
		since := ""
		if !u.Since.IsZero() {
			since = shortDuration(now.Sub(u.Since)) + " ago"
		}
		lastErr := ""
		if u.Status != gateway.StatusUp {
			lastErr = oneLine(u.LastError, 80)
		}
		// The upstream's breaker, and a credential's on it that is not
		// closed: "closed" alone hid an open credential breaker refusing
		// every call (found trying the gateway from outside).
		br, brState := u.Breaker.State, u.Breaker.State
		for _, cred := range slices.Sorted(maps.Keys(u.CredentialBreakers)) {
			if cb := u.CredentialBreakers[cred]; cb.State != "closed" {
				br += ", " + cred + " " + cb.State
				if brState == "closed" {
					brState = cb.State
				}
			}
		}
		rows = append(rows, []cell{{n, ""}, {u.Status, stateColor(u.Status)}, {fmt.Sprint(u.Tools), ""}, {u.Transport, ""},
			{br, stateColor(brState)}, {since, ansiDim}, {lastErr, ansiRed}})
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "no upstreams")
	} else {
		table(w, []string{"UPSTREAM", "STATUS", "TOOLS", "TRANSPORT", "BREAKER", "SINCE", "LAST ERROR"}, rows, color)
	}
	// The table's column is cut; why an upstream is down is often at the
	// end (a child's last words on stderr or stdout), so it is shown whole.
	first := true
	for _, n := range names {
		u := h.Upstreams[n]
		if u.Status == gateway.StatusUp || u.LastError == "" || utf8.RuneCountInString(strings.Join(strings.Fields(u.LastError), " ")) <= 80 {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nwhy:")
			first = false
		}
		fmt.Fprintf(w, "  %s: %s\n", printable(n), oneLine(u.LastError, 2000))
	}

	if len(h.Credentials) > 0 {
		fmt.Fprintln(w)
		rows = nil
		for _, n := range slices.Sorted(maps.Keys(h.Credentials)) {
			c := h.Credentials[n]
			ttl, expires := "unknown", ""
			if c.TTLSeconds != nil {
				ttl = shortDuration(time.Duration(*c.TTLSeconds) * time.Second)
				if *c.TTLSeconds <= 0 {
					ttl = "expired"
				}
				expires = c.ExpiresAt.UTC().Format(time.RFC3339)
			}
			problem := ""
			if !c.Status.Usable() || c.Status == authmap.StatusExpiring {
				if c.LastError != nil {
					problem = oneLine(c.LastError.Detail, 70)
				}
			}
			rows = append(rows, []cell{{n, ""}, {c.Status.String(), stateColor(c.Status.String())}, {ttl, stateColor(c.Status.String())},
				{expires, ansiDim}, {c.Source, ""}, {fmt.Sprintf("%d/100", c.Readiness.Score), ""},
				{strings.Join(usedBy(h, n), ","), ""}, {problem, ansiRed}})
		}
		table(w, []string{"CREDENTIAL", "STATUS", "TTL", "EXPIRES", "SOURCE", "READINESS", "UPSTREAMS", "PROBLEM"}, rows, color)
	}

	if len(h.Notify) > 0 {
		fmt.Fprintln(w)
		rows = nil
		for _, n := range slices.Sorted(maps.Keys(h.Notify)) {
			s := h.Notify[n]
			dc := ""
			if s.Dropped > 0 {
				dc = ansiRed
			}
			rows = append(rows, []cell{{n, ""}, {s.Format, ""}, {fmt.Sprint(s.Sent), ""}, {fmt.Sprint(s.Dropped), dc}, {fmt.Sprint(s.Queued), ""},
				{oneLine(s.LastError, 70), ansiDim}})
		}
		table(w, []string{"NOTIFIER", "FORMAT", "SENT", "DROPPED", "QUEUED", "LAST ERROR"}, rows, color)
	}
}

// usedBy lists the upstreams that use credential name.
func usedBy(h gateway.Health, name string) []string {
	var out []string
	for _, up := range slices.Sorted(maps.Keys(h.Upstreams)) {
		u := h.Upstreams[up]
		if u.Credential == name || slices.ContainsFunc(u.Credentials, func(tc gateway.ToolCredentialHealth) bool { return tc.Credential == name }) {
			out = append(out, up)
		}
	}
	return out
}

// shortDuration prints d in its two largest units (3d4h, 2h5m, 4m10s, 9s).
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Truncate(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h, m, s := d/time.Hour, d%time.Hour/time.Minute, d%time.Minute/time.Second
	switch {
	case days > 0:
		return fmt.Sprintf("%dd%dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh%dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

func oneLine(s string, n int) string {
	s = printable(strings.Join(strings.Fields(s), " "))
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		s = string(r[:n-1]) + "…"
	}
	return s
}

// printable returns s with the characters a terminal acts on instead of
// showing (control characters, escape sequences' ESC, bidirectional
// overrides) written as escapes: an upstream's error text, a child's
// stderr in particular, reached the operator's terminal raw and could
// retitle or clear it (found trying the gateway from outside).
func printable(s string) string {
	if !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !unprintable(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

func unprintable(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == utf8.RuneError
}
