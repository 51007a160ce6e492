package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestFastPathDeeplyNestedAnswer: an upstream's answer nesting far deeper
// than any MCP message fails the call as on the SDK's path, whose JSON
// decoding refuses more than 1000 levels. The fast path decoded it with
// unbounded recursion: 2.5 million levels (5 MB, under the default
// max_response_bytes) grew the calling goroutine's stack past Go's 1 GB
// limit, a fatal error that ended the whole gateway.
func TestFastPathDeeplyNestedAnswer(t *testing.T) {
	t.Parallel()
	const depth = 2_500_000
	deep := func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":%s%s}}`, id, strings.Repeat("[", depth), strings.Repeat("]", depth))
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		serveHeld(c, br)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var outcome [2]string
	for i, fast := range []bool{true, false} {
		h := newHostileUpstream(t, map[string]rawAnswerFunc{"x": deep})
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: {url: %s, timeout: 10s}\n", fast, h.url))
		a := newRawAgent(t, ctx, g)
		r, b := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__raw","arguments":{"text":"x"}}}`)
		outcome[i] = outcomeKind(t, r, b)
	}
	t.Logf("outcome: %s", outcome[0])
	if outcome[0] != outcome[1] {
		t.Errorf("fast path: %s; SDK path: %s", outcome[0], outcome[1])
	}
}

// TestAgentJSONDepth: the fast path decodes an agent's message only if the
// SDK would (at most 1000 levels of nesting); deeper ones go to the SDK,
// which refuses them. Decoding them cost the request's goroutine a stack of
// about 256 MB for a 1 MiB body (a sessionless POST on a stateful endpoint
// is decoded so, whatever fast_path says).
func TestAgentJSONDepth(t *testing.T) {
	var env rawMessage
	ok := `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"a":` + strings.Repeat("[", 998) + strings.Repeat("]", 998) + `}}`
	if err := agentJSON([]byte(ok), &env); err != nil {
		t.Errorf("1000 levels: %v", err)
	}
	deep := `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"a":` + strings.Repeat("[", 999) + strings.Repeat("]", 999) + `}}`
	if err := agentJSON([]byte(deep), &env); err == nil {
		t.Error("1001 levels decoded; the SDK refuses them")
	}
	// A string holding brackets is no nesting.
	str := `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"a":"` + strings.Repeat(`[\"`, 2000) + `"}}`
	if err := agentJSON([]byte(str), &env); err != nil {
		t.Errorf("brackets in a string: %v", err)
	}
}
