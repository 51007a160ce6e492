package gateway

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestOwnAnswer: ownAnswer takes the answers to credgate's own calls as
// servers write them (the go-sdk's member order, the TypeScript SDK's,
// Python's spacing) and leaves every other line to the message decoder.
func TestOwnAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line   string
		n      int64
		result string // "" for not taken
	}{
		{line: `{"jsonrpc":"2.0","id":"cg-12","result":{"content":[{"type":"text","text":"a}\"b"}]}}`, n: 12, result: `{"content":[{"type":"text","text":"a}\"b"}]}`},
		{line: `{"result":{"content":[]},"jsonrpc":"2.0","id":"cg-7"}`, n: 7, result: `{"content":[]}`},
		{line: `{"jsonrpc": "2.0", "id": "cg-3", "result": {"isError": true, "content": []}}`, n: 3, result: `{"isError": true, "content": []}`},
		{line: `{"jsonrpc":"2.0","id":"cg-4","result":{"a":"\\"}}`, n: 4, result: `{"a":"\\"}`},
		{line: `{"jsonrpc":"2.0","id":"cg-5","result":{}}`, n: 5, result: `{}`},
		// Left to the decoder.
		{line: `{"jsonrpc":"2.0","id":"cg-1","error":{"code":-32602,"message":"x"}}`},
		{line: `{"jsonrpc":"2.0","id":1,"result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-x","result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-","result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-1","result":{},"extra":1}`},
		{line: `{"jsonrpc":"2.0","id":"cg-1","result":{}}{"jsonrpc":"2.0","id":"cg-2","result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-1","result":{},"result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-1","id":"cg-2","result":{}}`},
		{line: `{"jsonrpc":"1.0","id":"cg-1","result":{}}`},
		{line: `{"id":"cg-1","result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-1"}`},
		{line: `{"jsonrpc":"2.0","id":"cg-1","result":{"a":"unterminated}}`},
		{line: `{"jsonrpc":"2.0","method":"notifications/message","params":{}}`},
		{line: `{"json\u0072pc":"2.0","id":"cg-1","result":{}}`},
		{line: `{"jsonrpc":"2.0","id":"cg-99999999999999999999","result":{}}`},
		{line: `[{"jsonrpc":"2.0","id":"cg-1","result":{}}]`},
	} {
		n, result, ok := ownAnswer([]byte(tc.line))
		if ok != (tc.result != "") || (ok && (n != tc.n || string(result) != tc.result)) {
			t.Errorf("ownAnswer(%s) = %d, %s, %v; want %d, %q", tc.line, n, result, ok, tc.n, tc.result)
		}
		if ok && !json.Valid(result) {
			t.Errorf("ownAnswer(%s): result %s is not one JSON value", tc.line, result)
		}
	}
}

// FuzzOwnAnswer: whatever the line, a result ownAnswer takes is what the
// message decoder finds in a line it decodes.
func FuzzOwnAnswer(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":"cg-12","result":{"content":[]}}`))
	f.Add([]byte(`{"result":{"a":"}"},"jsonrpc":"2.0","id":"cg-7"}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":"cg-007","result":[1,"\\",{"b":null}]}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		n, result, ok := ownAnswer(line)
		if !ok {
			return
		}
		var m struct {
			ID     string          `json:"id"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return // not valid JSON: the result's decoder refuses it
		}
		id, err := strconv.ParseInt(strings.TrimPrefix(m.ID, rawIDPrefix), 10, 64)
		if err != nil || id != n || !strings.HasPrefix(m.ID, rawIDPrefix) || string(m.Result) != string(result) {
			t.Errorf("ownAnswer(%s) = %d, %s; the decoder finds id %s, result %s", line, n, result, m.ID, m.Result)
		}
	})
}
