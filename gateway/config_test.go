package gateway

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(`
listen: 127.0.0.1:9000
upstreams:
  zeta:
    command: server
    args: [--flag]
    env: {API_TOKEN: abc}
  alpha:
    url: https://example.com/mcp
    headers: {Authorization: "Bearer xyz"}
    timeout: 5s
    prefix: ""
    tools: {allow: ["list_*"], deny: [list_secret]}
`), []string{
		"CREDGATE_TOOL_SEPARATOR=.",
		"CREDGATE_UPSTREAMS__ZETA__ENV__Mixed_Case=1",
		"CREDGATE_UPSTREAMS__ZETA__TIMEOUT=2s",
		"CREDGATE_CONFIG=/ignored.yaml",
		"OTHER=1",
	})
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if diff := cmp.Diff([]string{"zeta", "alpha"}, cfg.Order()); diff != "" {
		t.Errorf("order mismatch (-want +got):\n%s", diff)
	}
	z, a := cfg.Upstreams["zeta"], cfg.Upstreams["alpha"]
	if z.Transport != TransportStdio || a.Transport != TransportStreamableHTTP {
		t.Errorf("inferred transports = %q, %q", z.Transport, a.Transport)
	}
	if cfg.ToolSeparator != "." || z.Timeout != 2*time.Second || z.Env["Mixed_Case"] != "1" || a.Timeout != 5*time.Second {
		t.Errorf("env overrides not applied: sep %q timeout %v env %v", cfg.ToolSeparator, z.Timeout, z.Env)
	}
	if a.prefix("alpha") != "" || z.prefix("zeta") != "zeta" {
		t.Errorf("prefixes = %q, %q", a.prefix("alpha"), z.prefix("zeta"))
	}
	if !a.Tools.Allowed("list_issues") || a.Tools.Allowed("list_secret") || a.Tools.Allowed("delete") {
		t.Error("tool filter wrong")
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml string
		want       []string // each must appear in the error
		env        []string // CREDGATE_* variables
	}{
		{"unknown key", "upstreams:\n  a:\n    command: x\n    comand: y\nlistn: x\n",
			[]string{"upstreams.a.comand: unknown key", "listn: unknown key"}, nil},
		{"missing command", "upstreams:\n  a:\n    transport: stdio\n", []string{"upstreams.a.command: missing"}, nil},
		{"missing url", "upstreams:\n  a:\n    transport: sse\n", []string{"upstreams.a.url: missing"}, nil},
		{"port out of range", "upstreams:\n  a:\n    url: http://127.0.0.1:99999/mcp\n", []string{"upstreams.a.url: invalid port 99999"}, nil},
		{"unknown transport", "upstreams:\n  a:\n    transport: grpc\n    url: http://x\n", []string{`upstreams.a.transport: unknown transport "grpc"`}, nil},
		{"bad name", "upstreams:\n  Bad.Name:\n    command: x\n", []string{"invalid upstream name"}, nil},
		{"name contains separator", "upstreams:\n  a__b:\n    command: x\n", []string{"upstreams.a__b", "separator"}, nil},
		{"prefix collision", "upstreams:\n  a:\n    command: x\n  b:\n    command: y\n    prefix: a\n", []string{`upstreams "a" and "b" both expose`}, nil},
		{"bad glob", "upstreams:\n  a:\n    command: x\n    tools: {deny: ['[']}\n", []string{"upstreams.a.tools.deny[0]: invalid glob"}, nil},
		{"all at once", "upstreams:\n  a:\n    transport: stdio\n  b:\n    transport: sse\n", []string{"upstreams.a.command", "upstreams.b.url"}, nil},
		{"yaml duplicate", "upstreams:\n  a:\n    command: x\n  a:\n    command: y\n", []string{"already defined"}, nil},
		// One problem, on one line (the header and its line were two).
		{"yaml duplicate, one line", "upstreams:\n  a:\n    command: x\n  a:\n    command: y\n", []string{`yaml: line 4: mapping key "a" already defined at line 2`}, nil},
		{"unknown key from the environment", "upstreams:\n  a: {command: x}\n", []string{"CREDGATE_UPSTREAMS__A__COMAND (upstreams.a.comand): unknown key"}, []string{"CREDGATE_UPSTREAMS__A__COMAND=y"}},
		// A variable meant to hold a secret, as the README once showed.
		{"secret in a CREDGATE_ variable", "admin: {token: {env: CREDGATE_ADMIN_TOKEN}}\nupstreams:\n  a: {command: x}\n",
			[]string{"CREDGATE_ADMIN_TOKEN (admin_token): unknown key; every CREDGATE_* variable is read as a config override, so a variable holding a secret needs another name"}, []string{"CREDGATE_ADMIN_TOKEN=0123456789abcdef"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(tc.yaml), tc.env)
			if err == nil {
				t.Fatal("ParseConfig succeeded, want error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestChildEnv(t *testing.T) {
	t.Parallel()
	got := childEnv([]string{"PATH=/bin", "SECRET_TOKEN=s3cr3t", "HOME=/root"}, map[string]string{"HOME": "/tmp", "X": "1"})
	want := map[string]bool{"PATH=/bin": true, "HOME=/tmp": true, "X=1": true}
	if len(got) != len(want) {
		t.Fatalf("childEnv = %v, want %v", got, want)
	}
	for _, kv := range got {
		if !want[kv] {
			t.Errorf("childEnv has %q; the gateway's own secrets must not leak to children", kv)
		}
	}
}

// TestShippedConfigs keeps the example configs valid.
func TestShippedConfigs(t *testing.T) {
	t.Parallel()
	matches, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(matches) == 0 {
		t.Fatalf("no configs found: %v", err)
	}
	for _, m := range matches {
		if filepath.Base(m) == "prometheus-rules.yaml" {
			continue // Prometheus alerting rules, not a gateway config (see TestPrometheusRulesFile)
		}
		if _, err := LoadConfig(m, nil); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}

// TestYAMLSyntaxErrorLine: a YAML syntax error names the line an editor
// shows. The library counts its parser errors' lines from 0 (an unclosed
// "[" on line 2 was "line 1"), its scanner errors' from 1.
func TestYAMLSyntaxErrorLine(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]string{
		"listen: 127.0.0.1:1\nhealth_interval: [5s\nupstreams: {}\n":                "line 2: did not find expected ',' or ']'",
		"listen: 127.0.0.1:1\nupstreams:\n  a: {url: http://x/mcp}\n- c\n":          "at or after line 4: did not find expected key",
		"listen: x\nupstreams:\n  a:\n    command: echo\n  - x\n":                   "at or after line 3: did not find expected key",
		"listen: 127.0.0.1:1\nupstreams:\n  a: {url: http://x/mcp}\n  b: @x\n":      "line 4: found character that cannot start any token",
		"listen: 127.0.0.1:1\nupstreams:\n  a: {url: http://x/mcp\n  b: {url: y}\n": "line 3: did not find expected ',' or '}'",
		// Scanner errors, counted from 1 already, though worded alike.
		"listen: x\nupstreams: *\n":        "line 2: did not find expected alphabetic or numeric character",
		"listen: x\nhealth_interval: |x\n": "line 2: did not find expected comment or line break",
	} {
		_, err := ParseConfig([]byte(doc), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig(%q) = %v; want %q", doc, err, want)
		}
	}
}
