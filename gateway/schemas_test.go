package gateway

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Regression test for issue 12: listed tools keep their schemas as JSON
// text, not the SDK's decoded maps, and a tools/list of them carries the
// same JSON.
func TestCompactSchemas(t *testing.T) {
	t.Parallel()
	in := `{"type":"object","properties":{"q":{"type":"string","description":"a <b> & c"}},"required":["q"]}`
	var decoded any
	if err := json.Unmarshal([]byte(in), &decoded); err != nil {
		t.Fatal(err)
	}
	raw := json.RawMessage(`{"type":"object"}`)
	tools := []*mcp.Tool{
		{Name: "a", InputSchema: decoded, OutputSchema: decoded},
		{Name: "b", InputSchema: raw},
	}
	before, _ := json.Marshal(tools)
	compactSchemas(tools)
	after, _ := json.Marshal(tools)
	if _, ok := tools[0].InputSchema.(json.RawMessage); !ok {
		t.Errorf("InputSchema is %T, want json.RawMessage", tools[0].InputSchema)
	}
	if tools[1].OutputSchema != nil {
		t.Errorf("nil OutputSchema became %v", tools[1].OutputSchema)
	}
	var want, got any
	_ = json.Unmarshal(before, &want)
	_ = json.Unmarshal(after, &got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tools/list JSON mismatch (-want +got):\n%s", diff)
	}
}
