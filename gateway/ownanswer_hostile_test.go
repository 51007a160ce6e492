package gateway

// Regression tests from the review of the stdio answer scan (ownAnswer),
// instructions and the config's dates (issue 12's last session).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

type nopWC struct{ io.Writer }

func (nopWC) Close() error { return nil }

// deliverOwn feeds line to a stdioConn as the child's output, with call 1
// pending, and returns what call 1 got (nil: not delivered, as for a line
// the decoder refused and skipped).
func deliverOwn(t *testing.T, line string) *jsonrpc.Response {
	t.Helper()
	c := newStdioConn(strings.NewReader(line+"\n"), nopWC{io.Discard}, newResponseLimit("a", DefaultMaxResponseBytes, zerolog.Nop()))
	ch := make(chan *jsonrpc.Response, 1)
	c.pending[1] = ch
	if _, err := c.readMessages(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		return r
	default:
		return nil
	}
}

func deepLine(depth int) string {
	return `{"jsonrpc":"2.0","id":"cg-1","result":{"structuredContent":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) +
		`,"content":[{"type":"text","text":"x"}]}}`
}

// TestOwnAnswerKeepsDepthBound: the message decoder (decodeFrame, the
// SDK's internal/json) refuses a message nested deeper than 1000; such an
// answer is not handed over by ownAnswer either (passThrough's parser has
// no depth bound).
func TestOwnAnswerKeepsDepthBound(t *testing.T) {
	line := deepLine(1001)
	if _, err := decodeFrame([]byte(line)); err == nil {
		t.Fatal("decodeFrame accepted it")
	}
	resp := deliverOwn(t, line)
	if resp == nil {
		return // as before: skipped
	}
	g := &Server{}
	g.redactor = authmap.NewRedactor([]string{passSecret})
	if res := g.passThrough(&upstream{cfg: &UpstreamConfig{}}, nil, resp.Result); res != nil {
		t.Errorf("a result nested 1001 deep, which the decoder refuses, was delivered and passed through to the agent (%d bytes)", len(resp.Result))
	}
}

// TestOwnAnswerDeepDoesNotCrash: a stdio child's answer 3,000,000 levels
// deep (6 MB, under the 16 MiB default max_response_bytes) overflowed the
// goroutine stack in passThrough, which killed the whole gateway; run in a
// child process, which must exit cleanly.
func TestOwnAnswerDeepDoesNotCrash(t *testing.T) {
	if os.Getenv("CREDGATE_TEST_DEEP") == "1" {
		resp := deliverOwn(t, deepLine(3_000_000))
		if resp == nil {
			return
		}
		g := &Server{}
		g.redactor = authmap.NewRedactor([]string{passSecret})
		g.passThrough(&upstream{cfg: &UpstreamConfig{}}, nil, resp.Result)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOwnAnswerDeepDoesNotCrash$")
	cmd.Env = append(os.Environ(), "CREDGATE_TEST_DEEP=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		s := out.String()
		if i := strings.Index(s, "runtime: "); i >= 0 {
			s = s[i:min(len(s), i+300)]
		}
		t.Errorf("the gateway process died: %v\n%s", err, s)
	}
}

// TestOwnAnswerInvalidNotPassed: a result the decoder refuses (its line
// was skipped before ownAnswer) is delivered to its call now, but never
// passed to the agent as it is: passThrough refuses it too, and the call
// fails decoding it.
func TestOwnAnswerInvalidNotPassed(t *testing.T) {
	g := &Server{}
	g.redactor = authmap.NewRedactor([]string{passSecret})
	for _, r := range []string{
		"{\"content\":[{\"type\":\"text\",\"text\":\"a\tb\"}]}",
		"{\"content\":[{\"type\":\"text\",\"text\":\"a\x01b\"}]}",
		`{"content":[{"type":"text","text":"a\xb"}]}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":01}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":1.}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":-}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":1e}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":[1,]}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":1,}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a" 1}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{1:1}}`,
		`{"content":[{"type":"text","text":"x"}],"isError":false,}`,
		`{"content":[{"type":"text","text":"x"},]}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":"\ud800"}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":"\u12"}}`,
		`{"content":[{"type":"text","text":"x"}],"structuredContent":[}`,
	} {
		line := `{"jsonrpc":"2.0","id":"cg-1","result":` + r + `}`
		_, derr := decodeFrame([]byte(line))
		resp := deliverOwn(t, line)
		passed := resp != nil && g.passThrough(&upstream{cfg: &UpstreamConfig{}}, nil, resp.Result) != nil
		t.Logf("decoder err=%v delivered=%v passed=%v  %q", derr != nil, resp != nil, passed, r)
		if derr != nil && passed {
			t.Errorf("refused by the decoder, passed to the agent: %q", r)
		}
	}
}

// TestUnquotedTimestampNotRewritten: a string key given an unquoted
// timestamp keeps the text written or is refused ("quote it"), never turns
// into another string (only protocol_version takes a YAML date as one).
func TestUnquotedTimestampNotRewritten(t *testing.T) {
	for _, v := range []string{"2025-11-25T00:00:00Z", "2025-11-25 00:00:00", "2025-11-25t00:00:00.000Z", "2025-1-5", "2025-11-25"} {
		cfg, err := ParseConfig([]byte("upstreams:\n  a: {command: x, env: {SINCE: "+v+"}}\n"), nil)
		if err != nil {
			t.Logf("%s: refused (%v)", v, err)
			continue
		}
		if got := cfg.Upstreams["a"].Env["SINCE"]; got != v {
			t.Errorf("env SINCE: %s unquoted became %q", v, got)
		}
	}
}

// TestInstructionsRedactedBeforeCut: instructions are redacted before
// they are cut at 8 KiB, so a secret the cut would split is found whole.
func TestInstructionsRedactedBeforeCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const secret = "instr-secret-0f1e2d3c4b5a6978"
	text := strings.Repeat("x", maxInstructions-16) + " " + secret + " and more"
	s := mcp.NewServer(&mcp.Implementation{Name: "gh", Version: "1"}, &mcp.ServerOptions{Instructions: text})
	s.AddTool(&mcp.Tool{Name: "search", InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  gh: {url: %s, headers: {X-Api-Key: %s}}\nauth:\n  keys:\n    - {name: all, key: %s}\n", serveMCP(t, s), secret, keyOps))
	got := keyAgent(t, ctx, serveGateway(t, g), keyOps, nil).InitializeResult().Instructions
	if i := strings.Index(got, secret[:10]); i >= 0 {
		t.Errorf("instructions hold the start of the secret: %q", got[i:min(len(got), i+60)])
	}
}
