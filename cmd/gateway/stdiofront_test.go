package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/credgate/credgate/gateway"
)

// TestAgentLinesSkipsBadLines: `gateway stdio` passes the agent's JSON-RPC
// lines on and leaves out, with a warning that does not quote them, the
// lines the SDK's transport would end the session on (found trying the
// gateway from outside: one bad line stopped the gateway).
func TestAgentLinesSkipsBadLines(t *testing.T) {
	t.Parallel()
	long := `{"jsonrpc":"2.0","id":9,"method":"ping","params":{"x":"` + strings.Repeat("a", 3000) + `"}}`
	var members []string
	for i := range gateway.MaxBatch + 1 {
		members = append(members, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, 100+i))
	}
	bigBatch := "[" + strings.Join(members, ",") + "]"
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`garbage line secret-0123456789`,
		`{"jsonrpc":"2.0","id":2,"method":"ping"} trailing`,
		`{"jsonrpc":"2.0","id":true,"method":"ping"}`,
		``,
		long,
		`[{"jsonrpc":"2.0","id":3,"method":"ping"}]`,
		`[]`,
		`[1]`,
		`[{"jsonrpc":"2.0","id":5,"method":"ping"},{"jsonrpc":"2.0","id":5,"method":"ping"}]`,
		bigBatch, // more members than gateway.MaxBatch
		`{"jsonrpc":"2.0","id":6,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}`,
		`[{"jsonrpc":"2.0","id":7,"method":"ping"}]`, // no batches from 2025-06-18 on
		`{"jsonrpc":"2.0","id":4,"method":"ping"}`,   // no newline at the end
	}, "\n")
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	pr, pw := io.Pipe()
	go agentLines(strings.NewReader(in), pw, 2000, &log)
	out, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n" + `[{"jsonrpc":"2.0","id":3,"method":"ping"}]` + "\n" +
		`{"jsonrpc":"2.0","id":6,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}` + "\n" + `{"jsonrpc":"2.0","id":4,"method":"ping"}`
	if string(out) != want {
		t.Errorf("passed on:\n%s\nwant:\n%s", out, want)
	}
	if n := strings.Count(logs.String(), "left out"); n != 9 {
		t.Errorf("%d warnings, want 9 (three bad lines, one too long, five bad batches):\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "secret-0123456789") {
		t.Errorf("a left-out line is quoted in the log:\n%s", logs.String())
	}
}
