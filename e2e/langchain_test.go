package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolMessage is a LangChain ToolMessage as e2e/langchain/agent.mjs prints it.
type toolMessage struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	ToolCallID string          `json:"tool_call_id"`
	Status     string          `json:"status"`
	Content    json.RawMessage `json:"content"` // a string, or an array of content blocks
	Artifact   json.RawMessage `json:"artifact"`
	Thrown     string          `json:"thrown"`  // direct invoke only: the error it threw
	Message    string          `json:"message"` // direct invoke only
}

// text is everything the agent's model would read from the message.
func (m toolMessage) text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s + m.Message
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(m.Content, &blocks) == nil {
		var b strings.Builder
		for _, bl := range blocks {
			b.WriteString(bl.Text)
			b.WriteByte('\n')
		}
		return b.String() + m.Message
	}
	return string(m.Content) + m.Message
}

// failureInText finds the gateway's failure object (JSON starting with
// {"type":) in text an agent reads.
func failureInText(text string) (failureObject, bool) {
	for i := 0; ; {
		j := strings.Index(text[i:], `{"type":`)
		if j < 0 {
			return failureObject{}, false
		}
		i += j
		var f failureObject
		if json.NewDecoder(strings.NewReader(text[i:])).Decode(&f) == nil && f.Type != "" {
			return f, true
		}
		i++
	}
}

// TestLangChainAgentSeesAuthFailure runs a real orchestrator against the
// gateway: LangChain's MCP adapters load the gateway's tools and LangGraph's
// ToolNode executes a tool call that fails with a credential error upstream.
// The failure object must reach the ToolMessage the agent's model reads next.
func TestLangChainAgentSeesAuthFailure(t *testing.T) {
	requireNode(t)
	requireBin(t, "gateway")
	for _, pkg := range []string{"@langchain/mcp-adapters", "@langchain/core", "@langchain/langgraph"} {
		if _, err := os.Stat(npmPkg(pkg)); err != nil {
			t.Skipf("%s is not installed (%v): run `npm ci` in e2e/", pkg, err)
		}
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	a := startAuthHTTP(t, ctx, "gh")
	failArgs := `{"mode":"jsonrpc","message":"Authentication Failed: Bad credentials"}`
	cmd := exec.CommandContext(ctx, nodeBin(), filepath.Join("langchain", "agent.mjs"), a.g.URL,
		a.tool("echo"), `{"text":"hello agent"}`,
		a.tool("provider_error"), failArgs)
	cmd.Dir = filepath.Join(repoRoot(), "e2e")
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(repoRoot(), "e2e", "node_modules"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node agent.mjs: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	var out struct {
		Tools    []string      `json:"tools"`
		ToolNode []toolMessage `json:"toolNode"`
		Direct   []toolMessage `json:"direct"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("agent output is not JSON: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("agent output: %s", stdout.String())
	if len(out.ToolNode) != 2 || len(out.Direct) != 2 {
		t.Fatalf("agent ran %d ToolNode and %d direct calls; want 2 each", len(out.ToolNode), len(out.Direct))
	}

	// The working tool works through the orchestrator.
	if ok := out.ToolNode[0]; ok.Status == "error" || !strings.Contains(ok.text(), "hello agent") {
		t.Errorf("ToolNode echo: status %q, content %s; want a success with the echoed text", ok.Status, ok.Content)
	}

	check := func(how string, m toolMessage) {
		t.Helper()
		f, found := failureInText(m.text())
		if !found {
			// The adapters may keep _meta as an artifact; accept it there too.
			f, found = failureInText(string(m.Artifact))
		}
		if !found {
			t.Errorf("%s: the ToolMessage carries no failure object; the agent cannot tell what failed.\nmessage: %+v", how, m)
			return
		}
		want := fmt.Sprintf("auth_failure/credential_invalid from %q (credential %q)", "gh", a.credential())
		got := fmt.Sprintf("%s/%s from %q (credential %q)", f.Type, f.Subtype, f.Upstream, f.Credential)
		if got != want {
			t.Errorf("%s: object in the ToolMessage = %s; want %s\nobject: %v", how, got, want, f)
		}
		checkNoSecret(t, how, string(m.Content)+m.Message)
	}
	fail := out.ToolNode[1]
	if fail.Status != "error" {
		t.Errorf("ToolNode: status = %q; want error (the agent should see the call failed)", fail.Status)
	}
	check("ToolNode ToolMessage", fail)
	check("tool.invoke(ToolCall)", out.Direct[1])
}
