package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// stallUpstreamMode makes the test binary a raw 2025-11-25 stdio upstream
// (stallUpstream) that stops reading its stdin during a call.
const stallUpstreamMode = "stall"

// stallUpstream answers initialize and tools/list, and tools/call of any
// tool with "ok", except stall: it says "stalled" on stderr and reads
// nothing more (its stdin pipe fills) until the file named in its file
// argument exists, and never answers that call. A line that is not JSON
// it reports on stderr as "bad line".
func stallUpstream() {
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad line: %v\n", err)
			return
		}
		switch req.Method {
		case "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"stall","version":"1"}}`)
		case "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"stall","inputSchema":{"type":"object"}},{"name":"x","inputSchema":{"type":"object"}}]}`)
		case "tools/call":
			var p struct {
				Name      string `json:"name"`
				Arguments struct {
					File string `json:"file"`
				} `json:"arguments"`
			}
			_ = json.Unmarshal(req.Params, &p)
			if p.Name != "stall" {
				replyResult(out, req.ID, `{"content":[{"type":"text","text":"ok"}]}`)
				return
			}
			fmt.Fprintln(os.Stderr, "stalled")
			for {
				if _, err := os.Stat(p.Arguments.File); err == nil {
					return // never answered
				}
				time.Sleep(5 * time.Millisecond) // the child's own stall, not a test's wait
			}
		case "ping":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// stallGateway starts a gateway (fast_path as fast) whose upstream a is
// stallUpstream with timeout, and returns it, a, a's child output, and the
// file whose creation makes a stalled child read again (created at the
// test's end too).
func stallGateway(t *testing.T, ctx context.Context, fast bool, timeout time.Duration) (*Server, *upstream, *childStderr, string) {
	t.Helper()
	up := strings.TrimSuffix(selfUpstream(t, stallUpstreamMode), "}") + ", timeout: " + timeout.String() + "}"
	g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: %s\n", fast, up))
	u := g.upstream("a")
	if u.session.Load() == nil {
		t.Fatalf("upstream a is down: %+v", g.Health().Upstreams["a"])
	}
	release := t.TempDir() + "/release"
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) })
	return g, u, u.childOutput(), release
}

// TestStdioTimeoutWhileChildStalls: a call to a stdio child that stopped
// reading its stdin ends at the upstream's timeout with the typed timeout
// failure, also while another call's request fills the pipe to the child,
// on both paths. The SDK's client sends the call's notifications/cancelled
// off the caller's return path (go-sdk issue 1150); stdioConn.call sent it
// inline, waiting behind the blocked write, so the call ran past its
// timeout until the child read again.
func TestStdioTimeoutWhileChildStalls(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			const timeout = 2 * time.Second
			g, _, child, release := stallGateway(t, ctx, fast, timeout)
			a, b := newRawAgent(t, ctx, g), newRawAgent(t, ctx, g)

			stalled := make(chan string, 1)
			go func() {
				r, body := a.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__stall","arguments":{"file":%q}}}`, release))
				stalled <- mustJSON(t, answer(t, r, body))
			}()
			waitFor(t, ctx, func() bool { return strings.Contains(strings.Join(child.tail(), "\n"), "stalled") })
			// A request larger than the pipe's buffer, sent well within the
			// stalled call's timeout: its write waits for the child to read.
			big := make(chan struct{})
			go func() {
				defer close(big)
				b.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a__x","arguments":{"pad":%q}}}`, strings.Repeat("p", 256<<10)))
			}()
			done := false
			select {
			case got := <-stalled:
				done = true
				if !strings.Contains(got, `"type":"timeout"`) {
					t.Errorf("the stalled call answered %s; want the typed timeout", got)
				}
			case <-time.After(timeout + 5*time.Second):
				t.Errorf("the stalled call did not end at its %s timeout (waited %s) while another call's request filled the child's pipe", timeout, timeout+5*time.Second)
			}
			_ = os.WriteFile(release, nil, 0o600)
			<-big
			if !done {
				select { // its goroutine may have ended the test instead
				case <-stalled:
				case <-ctx.Done():
				}
			}
		})
	}
}

// TestStdioCancelSameAnswer: an agent cancelling its call to a stdio child
// stops the tool on both paths (the child reads the cancellation for the id
// it was sent), and the call then ends without an answer on both, as
// JSON-RPC asks of the receiver of a cancellation (see
// TestFastPathCancelledCallNotAnswered; the SDK's path answered the bare
// context error).
func TestStdioCancelSameAnswer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	type reply struct {
		resp *http.Response
		body []byte
	}
	for _, fast := range []bool{true, false} {
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: %s\n", fast, selfUpstream(t, echoUpstreamMode)))
		child := g.upstream("a").childOutput()
		a := newRawAgent(t, ctx, g)
		done := make(chan reply, 1)
		go func() {
			r, body := a.post(ctx, `{"jsonrpc":"2.0","id":"w1","method":"tools/call","params":{"name":"a__wait","arguments":{}}}`)
			done <- reply{r, body}
		}()
		waitFor(t, ctx, func() bool { return strings.Contains(strings.Join(child.tail(), "\n"), "wait: started") })
		if r, body := a.post(ctx, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"w1","reason":"no longer needed"}}`); r.StatusCode != 202 {
			t.Fatalf("fast_path %v: the cancellation got %d %q", fast, r.StatusCode, body)
		}
		waitFor(t, ctx, func() bool { return strings.Contains(strings.Join(child.tail(), "\n"), "wait: cancelled") })
		var got reply
		select {
		case got = <-done:
		case <-ctx.Done():
			t.Fatalf("fast_path %v: the cancelled call's POST never ended", fast)
		}
		if got.resp.StatusCode != http.StatusOK || strings.Contains(string(got.body), `"id"`) {
			t.Errorf("fast_path %v: the cancelled call's POST: %d %q; want 200 and no answer", fast, got.resp.StatusCode, got.body)
		}
	}
}

// TestStdioCallArgumentsAsSent: the stdio fast path writes the child's
// tools/call itself (plainCall); arguments spanning lines, escaped, empty,
// missing, null, not an object, or with _meta of the agent's own reach the
// child as the SDK's client sends them, and the answers are the SDK path's.
func TestStdioCallArgumentsAsSent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	calls := []string{
		`{"name":"a__echo","arguments":{"text":"plain"}}`,
		"{\"name\":\"a__echo\",\"arguments\":{\n  \"text\": \"two\\nlines\"\r\n}}",
		`{"name":"a__echo","arguments":{"text":"a\u003cb \"q\" é"}}`,
		`{"name":"a__echo","arguments":{}}`,
		`{"name":"a__echo"}`,
		`{"name":"a__echo","arguments":null}`,
		`{"name":"a__echo","arguments":[1]}`,
		`{"name":"a__echo","arguments":"text"}`,
		`{"name":"a__echo","arguments":{"text":"meta"},"_meta":{"dev.example/k":"v"}}`,
	}
	var answers [2][]string
	for i, fast := range []bool{true, false} {
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: %s\n", fast, selfUpstream(t, echoUpstreamMode)))
		a := newRawAgent(t, ctx, g)
		for n, params := range calls {
			r, body := a.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}`, n, params))
			answers[i] = append(answers[i], mustJSON(t, answer(t, r, body)))
		}
	}
	for n := range calls {
		if answers[0][n] != answers[1][n] {
			t.Errorf("%s:\nfast path: %s\nSDK path:  %s", calls[n], answers[0][n], answers[1][n])
		}
	}
	for n, want := range map[int]string{0: "a:echo:plain", 1: `a:echo:two\nlines`, 2: `a:echo:a\u003cb \"q\" é`} {
		if !strings.Contains(answers[0][n], want) {
			t.Errorf("%s: %s; want %s", calls[n], answers[0][n], want)
		}
	}
	// A child that reads its stdin line by line (the go-sdk's decoder does
	// not care) gets arguments that spanned lines on one line.
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  r: {command: %q, env: {%s: lines}, timeout: 5s}\n", self, rawUpstreamEnv))
	r, body := newRawAgent(t, ctx, g).post(ctx, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"r__good\",\"arguments\":{\n\"a\": \"x\"\n}}}")
	if got := mustJSON(t, answer(t, r, body)); !strings.Contains(got, "raw ok") {
		t.Errorf("a line-reading child answered %s; want raw ok", got)
	}
}

// selfUpstream is the config (a YAML flow map) of an upstream that is this
// test binary run in mode (see TestMain), with env's KEY: value pairs added.
func selfUpstream(t testing.TB, mode string, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	vars := fmt.Sprintf("%s: %s", rawUpstreamEnv, mode)
	for i := 0; i+1 < len(env); i += 2 {
		vars += fmt.Sprintf(", %s: %s", env[i], env[i+1])
	}
	return fmt.Sprintf("{command: %q, env: {%s}}", self, vars)
}

// TestStdioWriteTimesOutWhileChildStalls: a call whose own request cannot be
// written, because the child stopped reading its stdin and the pipe is full,
// ends at the upstream's timeout with the typed timeout failure, and so does
// a call waiting behind that write, on both paths; once the child reads
// again, the upstream serves calls (on a new child if a request was cut
// short). The write used to block until the child read, past any timeout,
// holding every later call to the upstream with it.
func TestStdioWriteTimesOutWhileChildStalls(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			const timeout = 2 * time.Second
			g, u, child, release := stallGateway(t, ctx, fast, timeout)
			cs := u.session.Load()
			stalled := make(chan string, 1)
			go func() {
				a := newRawAgent(t, ctx, g)
				r, body := a.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__stall","arguments":{"file":%q}}}`, release))
				stalled <- mustJSON(t, answer(t, r, body))
			}()
			waitFor(t, ctx, func() bool { return strings.Contains(strings.Join(child.tail(), "\n"), "stalled") })
			// Two requests larger than the pipe's buffer and a small one:
			// at most one write is under way, the others wait for it.
			calls := []string{strings.Repeat("p", 256<<10), strings.Repeat("q", 256<<10), "small"}
			answers := make(chan string, len(calls))
			for _, pad := range calls {
				go func() {
					a := newRawAgent(t, ctx, g)
					r, body := a.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a__x","arguments":{"pad":%q}}}`, pad))
					answers <- mustJSON(t, answer(t, r, body))
				}()
			}
			bound := time.After(timeout + 5*time.Second)
			for range append(calls, "stall") {
				var got string
				select {
				case got = <-answers:
				case got = <-stalled:
				case <-bound:
					t.Fatalf("the calls did not all end within %s of their %s timeout while the child read nothing", 5*time.Second, timeout)
				}
				if !strings.Contains(got, `"type":"timeout"`) {
					t.Errorf("a call answered %s; want the typed timeout", got)
				}
			}
			_ = os.WriteFile(release, nil, 0o600)
			a := newRawAgent(t, ctx, g)
			r, body := a.post(ctx, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a__x","arguments":{}}}`)
			if !strings.Contains(string(body), `"text":"ok"`) || r.StatusCode != 200 {
				t.Errorf("once the child read again, a call answered %d %s", r.StatusCode, body)
			}
			// The requests given up part way were finished: the child read
			// whole lines, on the session it had.
			if tail := strings.Join(child.tail(), "\n"); strings.Contains(tail, "bad line") {
				t.Errorf("the child read a request cut short:\n%s", tail)
			}
			if u.session.Load() != cs {
				t.Errorf("the upstream reconnected: %+v", g.Health().Upstreams["a"])
			}
		})
	}
}
