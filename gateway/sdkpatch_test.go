package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSDKPatchStillNeeded guards the patched go-sdk copy in
// third_party/go-sdk (see its PATCH.md): it must equal the go-sdk version
// go.mod requires except for the patched files and the one added file
// (the fast path's seam), and it fails once upstream fixes what a patch
// works around (internal/json.Unmarshal building a decoder per call;
// jsonrpc2's handleAsync keeping the last request alive; a plain-text 400
// for an unknown method before 2026-07-28; an elicitation's mode written
// even when empty; a failed streamable client connection's cause formatted
// with %v, so that calls it ends cannot be told lost; every response's
// result compacted twice) or gains the seam
// the added file provides, which is when that part should go.
func TestSDKPatchStillNeeded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/modelcontextprotocol/go-sdk (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/modelcontextprotocol/go-sdk")
	}
	version := string(m[1])
	if !bytes.Contains(gomod, []byte("replace github.com/modelcontextprotocol/go-sdk "+version+" => ./third_party/go-sdk")) {
		t.Fatalf("go.mod does not replace go-sdk %s with ./third_party/go-sdk", version)
	}

	// The upstream module, from the module cache or the proxy.
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/modelcontextprotocol/go-sdk@"+version)
	cmd.Dir = t.TempDir() // outside any module: the replace does not apply
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download go-sdk@%s: %v\n%s", version, err, out)
	}
	var dl struct{ Dir string }
	if err := json.Unmarshal(out, &dl); err != nil || dl.Dir == "" {
		t.Fatalf("go mod download: %v %s", err, out)
	}

	// Each patch: the file, a line upstream still has while the problem is
	// there, and a line only the patched copy has.
	patches := []struct{ file, upstreamHas, mineHas, fixed string }{
		{"internal/json/json.go", "NewDecoder(bytes.NewReader(data)).Decode(v)",
			"json.Parse(data, v, json.DontMatchCaseInsensitiveStructFields)",
			"Unmarshal no longer builds a decoder per call"},
		{"internal/jsonrpc2/conn.go", "req, s.handlerQueue = s.handlerQueue[0], s.handlerQueue[1:]",
			"s.handlerQueue[0] = nil // credgate patch",
			"handleAsync no longer leaves the last request in the emptied queue"},
		{"mcp/streamable.go", "if protocolVersion >= protocolVersion20260728 && errors.Is(err, jsonrpc2.ErrNotHandled) && jreq.IsCall() {",
			"// credgate patch: a call of an unknown method gets a JSON-RPC",
			"an unknown method is answered with a JSON-RPC error in every version"},
		{"mcp/protocol.go", "Mode string `json:\"mode\"`",
			"Mode string `json:\"mode,omitempty\"` // credgate patch",
			"ElicitParams.Mode can be left out"},
		// Change 6: a failed streamable client connection keeps its cause.
		{"mcp/streamable.go", `c.fail(fmt.Errorf("%s: failed to reconnect (session ID: %v): %v", requestSummary, c.sessionID, err))`,
			`c.fail(fmt.Errorf("%s: failed to reconnect (session ID: %v): %w", requestSummary, c.sessionID, err)) // credgate patch: %w`,
			"a failed reconnect wraps its cause"},
		{"mcp/streamable.go", `c.fail(fmt.Errorf("standalone SSE request failed (session ID: %v): %v", c.sessionID, err))`,
			`c.fail(fmt.Errorf("standalone SSE request failed (session ID: %v): %w", c.sessionID, err))`,
			"a failed standalone SSE request wraps its cause"},
		{"mcp/streamable.go", `c.fail(fmt.Errorf("%s: failed to read body: %v", requestSummary, err))`,
			`c.fail(fmt.Errorf("%s: failed to read body: %w", requestSummary, err)) // credgate patch: %w`,
			"a failed body read wraps its cause"},
		{"mcp/streamable.go", `c.fail(fmt.Errorf("%s: exceeded %d retries without progress (session ID: %v)", requestSummary, c.maxRetries, c.sessionID))`,
			`c.fail(fmt.Errorf("%s: exceeded %d retries without progress (session ID: %v): %w", requestSummary, c.maxRetries, c.sessionID, io.ErrUnexpectedEOF))`,
			"running out of retries without progress wraps an error"},
		{"mcp/streamable.go", `Error: fmt.Errorf("request terminated without response"),`,
			`terminated = fmt.Errorf("request terminated without response: %w", readErr)`,
			"a call whose answer stream broke says why"},
		// Change 7: a response's result, already compact, is not compacted again.
		{"internal/jsonrpc2/messages.go", "func EncodeMessage(msg Message) ([]byte, error) {\n\twire := wireCombined{VersionTag: wireVersion}",
			"return encodeResponse(r)",
			"EncodeMessage no longer compacts every response's result again"},
		{"mcp/event.go", `yield(Event{}, fmt.Errorf("error reading event: %v", err))`,
			`yield(Event{}, fmt.Errorf("error reading event: %w", err)) // credgate patch: %w`,
			"an SSE read error is wrapped"},
	}
	// added is the file the fast path's seam lives in (issue 12): upstream
	// has no such file, and no AcquireSession of its own.
	const added = "mcp/credgate.go"
	isPatched := func(rel string) bool {
		return slices.ContainsFunc(patches, func(p struct{ file, upstreamHas, mineHas, fixed string }) bool { return p.file == rel })
	}
	copyDir := filepath.Join(root, "third_party", "go-sdk")
	err = filepath.WalkDir(copyDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(copyDir, path)
		if isPatched(rel) || rel == "PATCH.md" || rel == added {
			return nil
		}
		mine, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		theirs, err := os.ReadFile(filepath.Join(dl.Dir, rel))
		if err != nil || !bytes.Equal(mine, theirs) {
			t.Errorf("third_party/go-sdk/%s differs from go-sdk %s (%v): refresh the copy (see PATCH.md)", rel, version, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, p := range patches {
		upstream, err := os.ReadFile(filepath.Join(dl.Dir, p.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(upstream), p.upstreamHas) {
			t.Errorf("go-sdk %s's %s: %s: the patch in third_party/go-sdk may be unneeded; check and drop it (see PATCH.md)", version, p.file, p.fixed)
		}
		mine, err := os.ReadFile(filepath.Join(copyDir, p.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(mine), p.mineHas) {
			t.Errorf("third_party/go-sdk/%s lacks the patch", p.file)
		}
	}
	// Change 7 writes a result as marshalToRaw made it: it must still be
	// encoding/json's, without HTML escaping, or the bytes on the wire
	// would change.
	if msgs, err := os.ReadFile(filepath.Join(dl.Dir, "internal", "jsonrpc2", "messages.go")); err != nil {
		t.Fatal(err)
	} else if m := regexp.MustCompile(`(?s)func jsonMarshal\(obj any\) \(\[\]byte, error\) \{.*?\n\}`).Find(msgs); m == nil ||
		!bytes.Contains(m, []byte("json.NewEncoder(&buf)")) || !bytes.Contains(m, []byte("enc.SetEscapeHTML(false)")) {
		t.Errorf("go-sdk %s's jsonrpc2.jsonMarshal changed: check change 7 (encodeResponse) still writes what it would (see PATCH.md)", version)
	}
	if _, err := os.Stat(filepath.Join(dl.Dir, added)); err == nil {
		t.Errorf("go-sdk %s has a file %s of its own: merge credgate's seam into it (see PATCH.md)", version, added)
	}
	src, err := os.ReadFile(filepath.Join(dl.Dir, "mcp", "streamable.go"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(src), "AcquireSession(") {
		t.Errorf("go-sdk %s has an AcquireSession of its own: drop third_party/go-sdk/%s and use it (see PATCH.md)", version, added)
	}
}

// TestSDKResponseEncoding: a response the patched SDK writes (change 7:
// its result is not compacted again) is byte for byte what encoding/json
// wrote for it: ids of every kind, escapes as encoding/json makes them
// without HTML escaping.
func TestSDKResponseEncoding(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := mcp.NewServer(&mcp.Implementation{Name: "plain", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "t", Description: "<b>&amp;\u2028</b>", InputSchema: json.RawMessage(`{"type": "object"}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	url := serveMCP(t, srv)
	for _, id := range []string{`7`, `"<a&b>\u2028x"`, `-1`, `"é"`} {
		t.Run(id, func(t *testing.T) {
			code, hdr, body := postMCP(t, ctx, url, "", "", `{"jsonrpc":"2.0","id":`+id+`,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
			sid := hdr.Get("Mcp-Session-Id")
			if code != http.StatusOK || sid == "" {
				t.Fatalf("initialize: %d %s", code, body)
			}
			postMCP(t, ctx, url, "", sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			_, _, body = postMCP(t, ctx, url, "", sid, `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/list","params":{}}`)
			_, data, ok := strings.Cut(body, "data: ")
			if !ok {
				t.Fatalf("tools/list answer %q: no event", body)
			}
			data, _, _ = strings.Cut(data, "\n")
			var msg struct {
				JSONRPC string          `json:"jsonrpc"`
				ID      any             `json:"id"`
				Result  json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal([]byte(data), &msg); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(msg); err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimSuffix(buf.String(), "\n"); data != want {
				t.Errorf("the SDK wrote\n%s\nencoding/json writes\n%s", data, want)
			}
		})
	}
}
