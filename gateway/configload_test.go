package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	yamlv3 "go.yaml.in/yaml/v3"
)

// parseErr parses yaml with environ and returns the error's text; it fails
// the test when parsing succeeds.
func parseErr(t *testing.T, yaml string, environ ...string) string {
	t.Helper()
	_, err := ParseConfig([]byte(yaml), environ)
	if err == nil {
		t.Fatalf("ParseConfig succeeded, want an error for:\n%s", yaml)
	}
	return err.Error()
}

// checkNoEmptyLines fails when an error message has an empty line.
func checkNoEmptyLines(t *testing.T, msg string) {
	t.Helper()
	for i, l := range strings.Split(msg, "\n") {
		if strings.TrimSpace(l) == "" {
			t.Errorf("line %d of the error is empty:\n%s", i+1, msg)
		}
	}
}

// durationKeys lists the key paths of every time.Duration field of Config,
// with upstream fields under upstreams.a, found by reflection so that fields
// added later are covered too.
func durationKeys(t reflect.Type, at string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		if tag == "" || !f.IsExported() {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		key := joinKey(at, tag)
		switch {
		case ft == durationType:
			keys = append(keys, key)
		case ft == reflect.TypeFor[time.Time]():
		case reflect.PointerTo(ft).Implements(textUnmarshalerType):
			// A secret (authmap.SecretRef) nests sources, recursively.
		case ft.Kind() == reflect.Struct:
			keys = append(keys, durationKeys(ft, key)...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Pointer && ft.Elem().Elem().Kind() == reflect.Struct:
			keys = append(keys, durationKeys(ft.Elem(), key+".a")...)
		}
	}
	return keys
}

// setKey sets a dotted key path in a nested map.
func setKey(m map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
}

// TestDurationsNeedUnit is the regression test for issue 6 item 14: a
// duration without a unit (timeout: 30, read as 30ns before) is an error
// naming the key, from the file and from the environment, for every
// duration key there is.
func TestDurationsNeedUnit(t *testing.T) {
	t.Parallel()
	keys := durationKeys(reflect.TypeFor[Config](), "")
	if len(keys) == 0 {
		t.Fatal("no duration keys found")
	}
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			raw := map[string]any{"upstreams": map[string]any{"a": map[string]any{"command": "x"}}}
			setKey(raw, key, 30)
			file, err := yamlv3.Marshal(raw)
			if err != nil {
				t.Fatal(err)
			}
			msg := parseErr(t, string(file))
			if !strings.Contains(msg, key+": want a duration with a unit") {
				t.Errorf("error does not name %s:\n%s", key, msg)
			}
			// From the environment, the variable is named.
			msg = parseErr(t, "upstreams:\n  a: {command: x}\n", envName(key)+"=30")
			if want := envName(key) + " (" + key + "): want a duration with a unit"; !strings.Contains(msg, want) {
				t.Errorf("error does not contain %q:\n%s", want, msg)
			}
			// With a unit it loads (a key with bounds of its own, such as
			// state.redis.timeout, may refuse the value for another reason).
			// With a unit it loads (with what its section requires besides).
			if strings.HasPrefix(key, "auth.oauth.") {
				setKey(raw, "auth.oauth.issuer", "https://as.example.com")
				setKey(raw, "auth.oauth.resource", "https://gw.example.com/mcp")
			}
			setKey(raw, key, "30s")
			file, _ = yamlv3.Marshal(raw)
			if _, err := ParseConfig(file, nil); err != nil && strings.Contains(err.Error(), key+": want a duration") {
				t.Errorf("%s: 30s: %v", key, err)
			}
		})
	}
}

// TestListenValidated is the regression test for issue 6 item 14: listen is
// checked at load (listen: 8094 passed validate, then the gateway exited).
func TestListenValidated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ listen, want string }{
		{"8094", `listen: invalid address "8094": want host:port, e.g. 127.0.0.1:8094`},
		{"localhost", `listen: invalid address "localhost": want host:port`},
		{"127.0.0.1:http", `listen: invalid address "127.0.0.1:http": invalid port "http"`},
		{"127.0.0.1:70000", `invalid port "70000"`},
	} {
		msg := parseErr(t, "listen: "+tc.listen+"\n")
		if !strings.Contains(msg, tc.want) {
			t.Errorf("listen %s: error lacks %q:\n%s", tc.listen, tc.want, msg)
		}
	}
	for _, ok := range []string{"127.0.0.1:8094", ":8080", `"[::1]:0"`, "localhost:9000"} {
		if _, err := ParseConfig([]byte("listen: "+ok+"\n"), nil); err != nil {
			t.Errorf("listen %s: %v", ok, err)
		}
	}
}

// TestTypeErrorsInOnePass is the regression test for issue 6 item 14: type
// errors come with every other problem (a decode error used to hide them
// all, and print an empty line), one a line, each naming its key.
func TestTypeErrorsInOnePass(t *testing.T) {
	t.Parallel()
	msg := parseErr(t, `
stateless: maybe
tool_separator: [x]
upstreams:
  a:
    command: [npx, server]
    args: --flag
    env: {N: {nested: 1}}
  b:
    transport: grpc
    url: http://x
  c:
    url: http://x
    timout: 5s
`)
	checkNoEmptyLines(t, msg)
	for _, want := range []string{
		`stateless: want true or false, got "maybe"`,
		"tool_separator: want a string, got a list",
		"upstreams.a.command: want a string, got a list",
		"upstreams.a.args: want a list, got a string",
		"upstreams.a.env.N: want a string, got a mapping",
		`upstreams.b.transport: unknown transport "grpc"`,
		"upstreams.c.timout: unknown key (did you mean timeout?)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// A dropped value does not also read as missing.
	if strings.Contains(msg, "upstreams.a: no transport") || strings.Contains(msg, "upstreams.a.command: missing") {
		t.Errorf("consequences of a reported type error are reported too:\n%s", msg)
	}
	// A string is never printed in a type error: it may be a secret.
	msg = parseErr(t, "upstreams:\n  a:\n    command: x\n    env: [s3cr3t-value]\n")
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("type error prints the value: %s", msg)
	}
}

// TestScalarsForStrings: YAML scalars in string fields keep their YAML
// text (the decoder alone wrote true as "1").
func TestScalarsForStrings(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("upstreams:\n  a:\n    command: x\n    env: {DEBUG: true, PORT: 8080, RATIO: 0.5}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"DEBUG": "true", "PORT": "8080", "RATIO": "0.5"}, cfg.Upstreams["a"].Env); diff != "" {
		t.Errorf("env mismatch (-want +got):\n%s", diff)
	}
}

// TestDidYouMean is the regression test for issue 6 item 14: an unknown key
// gets the closest valid key at its level as a hint.
func TestDidYouMean(t *testing.T) {
	t.Parallel()
	msg := parseErr(t, `
listn: 127.0.0.1:8080
upstreams:
  a:
    comand: x
    heders: {A: b}
    tools: {alow: [x]}
    wholly_unrelated: 1
  b:
    type: http
    url: https://x
classify:
  rules:
    - {providr: acme, match: {status: 403}, subtype: credential_expired}
`)
	checkNoEmptyLines(t, msg)
	for _, want := range []string{
		"listn: unknown key (did you mean listen?)",
		"upstreams.a.comand: unknown key (did you mean command?)",
		"upstreams.a.heders: unknown key (did you mean headers?)",
		"upstreams.a.tools.alow: unknown key (did you mean allow?)",
		"classify.rules[0].providr: unknown key (did you mean provider?)",
		"upstreams.b.type: unknown key (did you mean transport?)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, "upstreams.a.wholly_unrelated: unknown key\n") && !strings.HasSuffix(msg, "upstreams.a.wholly_unrelated: unknown key") {
		t.Errorf("a key like no other gets no hint:\n%s", msg)
	}
}

// TestEnvOverrideErrors is the regression test for issue 6 item 14: an
// override that fails names its variable, and a list cannot be set from the
// environment (CREDGATE_..._ARGS=foo silently replaced the args).
func TestEnvOverrideErrors(t *testing.T) {
	t.Parallel()
	msg := parseErr(t, "upstreams:\n  a: {command: x, args: [--flag]}\n",
		"CREDGATE_UPSTREAMS__A__ARGS=foo",
		"CREDGATE_STATELESS=perhaps",
		"CREDGATE_UPSTREAMS__A__ENV=x",
		"CREDGATE_UPSTREAMS__A__TOOLS__ALLOW=x",
		"CREDGATE_LISTN=x",
		"CREDGATE_LISTEN=8094",
		"CREDGATE_UPSTREAMS__A__TRANSPORT=grpc",
	)
	checkNoEmptyLines(t, msg)
	for _, want := range []string{
		"CREDGATE_UPSTREAMS__A__ARGS (upstreams.a.args): a list cannot be set from the environment",
		"CREDGATE_UPSTREAMS__A__TOOLS__ALLOW (upstreams.a.tools.allow): a list cannot be set from the environment",
		`CREDGATE_STATELESS (stateless): want true or false, got "perhaps"`,
		"CREDGATE_UPSTREAMS__A__ENV (upstreams.a.env): want a mapping, got a string; set one entry per variable, such as CREDGATE_UPSTREAMS__A__ENV__NAME",
		"CREDGATE_LISTN (listn): unknown key (did you mean listen?)",
		`CREDGATE_LISTEN (listen): invalid address "8094": want host:port, e.g. 127.0.0.1:8094`,
		`CREDGATE_UPSTREAMS__A__TRANSPORT (upstreams.a.transport): unknown transport "grpc"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// Overrides that fit still apply.
	cfg, err := ParseConfig([]byte("upstreams:\n  a: {command: x}\n"), []string{"CREDGATE_STATELESS=true", "CREDGATE_UPSTREAMS__A__TIMEOUT=2s"})
	if err != nil || !cfg.Stateless || cfg.Upstreams["a"].Timeout != 2*time.Second {
		t.Errorf("overrides: %v, %+v", err, cfg)
	}
}

// TestExpandVariables is the regression test for issue 6 item 15: ${NAME}
// in config values reads the environment passed in; $${ is a literal ${;
// an unset variable is an error naming the key and the variable, and no
// message shows an expanded value.
func TestExpandVariables(t *testing.T) {
	t.Parallel()
	environ := []string{"TOKEN=tok-3f9a8b7c6d5e", "HOST=mcp.example.com", "BIN=/usr/bin/srv", "DIR=/srv", "EMPTY="}
	cfg, err := ParseConfig([]byte(`
upstreams:
  web:
    url: https://${HOST}/mcp
    headers: {Authorization: "Bearer ${TOKEN}", X-Literal: "$${TOKEN}", X-Default: "${UNSET:-none}", X-Env: "${env:HOST}"}
  cli:
    command: ${BIN}
    args: ["--token=${TOKEN}", "$$HOME", "a$b"]
    env: {GITHUB_TOKEN: "${TOKEN}", EMPTY_OK: "${EMPTY:-}"}
    cwd: ${DIR}
`), environ)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	web, cli := cfg.Upstreams["web"], cfg.Upstreams["cli"]
	if diff := cmp.Diff(map[string]string{"Authorization": "Bearer tok-3f9a8b7c6d5e", "X-Literal": "${TOKEN}", "X-Default": "none", "X-Env": "mcp.example.com"}, web.Headers); diff != "" {
		t.Errorf("headers mismatch (-want +got):\n%s", diff)
	}
	if web.URL != "https://mcp.example.com/mcp" || cli.Command != "/usr/bin/srv" || cli.Cwd != "/srv" {
		t.Errorf("url %q command %q cwd %q", web.URL, cli.Command, cli.Cwd)
	}
	if diff := cmp.Diff([]string{"--token=tok-3f9a8b7c6d5e", "$$HOME", "a$b"}, cli.Args); diff != "" {
		t.Errorf("args mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"GITHUB_TOKEN": "tok-3f9a8b7c6d5e", "EMPTY_OK": ""}, cli.Env); diff != "" {
		t.Errorf("env mismatch (-want +got):\n%s", diff)
	}

	msg := parseErr(t, `
listen: ${HOST}
stateless: ${HOST}
upstreams:
  a:
    command: x
    env: {GITHUB_TOKEN: "${GITHUB_TOKEN}", E: "${EMPTY}"}
    args: ["${bad-name}", "${OPEN"]
  b:
    url: https://x/?key=${TOKEN}&${input:key}
  c:
    url: ftp://${TOKEN}
`, environ...)
	checkNoEmptyLines(t, msg)
	for _, want := range []string{
		"upstreams.a.env.GITHUB_TOKEN: ${GITHUB_TOKEN}: environment variable GITHUB_TOKEN is not set",
		"upstreams.a.env.E: ${EMPTY}: environment variable EMPTY is empty",
		"upstreams.a.args[0]: invalid reference ${bad-name}",
		"upstreams.a.args[1]: unterminated reference",
		"upstreams.b.url: ${input:key}: input variables",
		`upstreams.c.url: invalid url "ftp://${TOKEN}" (before expansion)`,
		`listen: invalid address "${HOST}" (before expansion)`,
		`stateless: want true or false, got "${HOST}" (before expansion)`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	for _, secret := range []string{"tok-3f9a8b7c6d5e", "mcp.example.com"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error shows the expanded value %q:\n%s", secret, msg)
		}
	}
	// The environment's overrides are taken literally.
	cfg, err = ParseConfig([]byte("upstreams:\n  a: {command: x}\n"), []string{"CREDGATE_UPSTREAMS__A__ENV__X=${NOPE}"})
	if err != nil || cfg.Upstreams["a"].Env["X"] != "${NOPE}" {
		t.Errorf("override: %v, %v", err, cfg)
	}
}

// claudeDesktop is a Claude Desktop / Cursor style config.
const claudeDesktop = `{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "GitHub": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-github"],
      "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
      "autoApprove": ["get_issue"]
    },
    "my.files server": {"command": "/usr/local/bin/files", "args": [], "disabledTools": ["delete_file"], "timeout": 60},
    "remote": {"type": "http", "url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${env:REMOTE_TOKEN}"}},
    "legacy": {"transport": "sse", "url": "https://old.example.com/sse"},
    "windsurf": {"serverUrl": "https://ws.example.com/mcp"},
    "off": {"command": "nothing", "disabled": true}
  }
}`

var desktopEnv = []string{"GITHUB_TOKEN=ghp_0123456789abcdef", "REMOTE_TOKEN=rt_abcdef0123456789"}

// TestDesktopConfig is the regression test for issue 6 item 16: a desktop
// client's config (mcpServers, JSON) loads as it is, each entry an upstream.
func TestDesktopConfig(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(claudeDesktop), desktopEnv)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if diff := cmp.Diff([]string{"github", "my-files-server", "remote", "legacy", "windsurf"}, cfg.Order()); diff != "" {
		t.Errorf("upstreams mismatch (-want +got):\n%s", diff)
	}
	gh, files, remote, legacy, ws := cfg.Upstreams["github"], cfg.Upstreams["my-files-server"], cfg.Upstreams["remote"], cfg.Upstreams["legacy"], cfg.Upstreams["windsurf"]
	if gh.Transport != TransportStdio || gh.Command != "npx" || gh.Env["GITHUB_PERSONAL_ACCESS_TOKEN"] != "ghp_0123456789abcdef" {
		t.Errorf("github = %+v", gh)
	}
	if files.Tools.Allowed("delete_file") || !files.Tools.Allowed("read_file") {
		t.Errorf("disabledTools not applied: %+v", files.Tools)
	}
	if remote.Transport != TransportStreamableHTTP || remote.Headers["Authorization"] != "Bearer rt_abcdef0123456789" {
		t.Errorf("remote = %+v", remote)
	}
	if legacy.Transport != TransportSSE || ws.URL != "https://ws.example.com/mcp" || ws.Transport != TransportStreamableHTTP {
		t.Errorf("legacy = %+v, windsurf = %+v", legacy, ws)
	}
	want := []string{
		"globalShortcut: ignored: not a credgate setting",
		"mcpServers.GitHub.autoApprove: ignored: tool approval is the agent's business",
		"mcpServers.my.files server.timeout: ignored: clients disagree on its unit; set upstreams.<name>.timeout (a duration, default 60s) in a credgate config",
		"mcpServers.off: disabled: skipped",
	}
	if diff := cmp.Diff(want, cfg.LoadWarnings()); diff != "" {
		t.Errorf("warnings mismatch (-want +got):\n%s", diff)
	}

	// VS Code's .vscode/mcp.json, in YAML for good measure.
	cfg, err = ParseConfig([]byte("servers:\n  Fetch:\n    type: stdio\n    command: uvx\n    args: [mcp-server-fetch]\ninputs: []\n"), nil)
	if err != nil || cfg.Upstreams["fetch"] == nil || cfg.Upstreams["fetch"].Command != "uvx" {
		t.Errorf("VS Code servers: %v, %+v", err, cfg)
	}

	// Problems name the keys of the user's file.
	msg := parseErr(t, `{"mcpServers": {
		"A": {"command": "x"}, "a": {"command": "y"},
		"b": {"comand": "x"},
		"c": {"type": "grpc", "url": "https://x"},
		"d": {"url": "not a url"},
		"e": {"command": "x", "env": {"T": "${MISSING}"}},
		"f": {"command": "x", "envFile": ".env"},
		"g": {"serverUrl": "ftp://${SECRET}/mcp"},
		"!!": {"command": "x"}}}`, "SECRET=s3cr3t-0123456789")
	checkNoEmptyLines(t, msg)
	for _, want := range []string{
		`mcpServers.a: becomes upstream "a", like mcpServers.A; rename one of them`,
		"mcpServers.b.comand: unknown key (did you mean command?)",
		`mcpServers.c.type: unknown transport "grpc"`,
		`mcpServers.d.url: invalid url "not a url"`,
		"mcpServers.e.env.T: ${MISSING}: environment variable MISSING is not set",
		"mcpServers.f.envFile: not supported",
		"mcpServers.!!: the name has no letter or digit",
		`mcpServers.g.url: invalid url "ftp://${SECRET}/mcp" (before expansion)`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("error shows an expanded value:\n%s", msg)
	}
}

// TestImportDesktopConfig is the regression test for issue 6 item 16:
// `gateway import` prints credgate YAML that loads to the same config, with
// the variable references kept, not their values.
func TestImportDesktopConfig(t *testing.T) {
	t.Parallel()
	out, warnings, err := ImportDesktopConfig([]byte(claudeDesktop))
	if err != nil {
		t.Fatalf("ImportDesktopConfig: %v", err)
	}
	if len(warnings) != 5 || !strings.Contains(warnings[4], "variables not set here (GITHUB_TOKEN, REMOTE_TOKEN)") {
		t.Errorf("warnings = %q", warnings)
	}
	for _, secret := range []string{"ghp_0123456789abcdef", "rt_abcdef0123456789"} {
		if bytes.Contains(out, []byte(secret)) {
			t.Errorf("import copied a secret out of the environment:\n%s", out)
		}
	}
	for _, want := range []string{"${GITHUB_TOKEN}", "Bearer ${REMOTE_TOKEN}", "# from mcpServers.my.files server\n  my-files-server:"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("import lacks %q:\n%s", want, out)
		}
	}
	direct, err := ParseConfig([]byte(claudeDesktop), desktopEnv)
	if err != nil {
		t.Fatal(err)
	}
	imported, err := ParseConfig(out, desktopEnv)
	if err != nil {
		t.Fatalf("the imported YAML does not load: %v\n%s", err, out)
	}
	if diff := cmp.Diff(direct, imported, cmpopts.IgnoreUnexported(Config{}, ToolFilter{})); diff != "" {
		t.Errorf("imported config mismatch (-direct +imported):\n%s\n%s", diff, out)
	}
	if diff := cmp.Diff(direct.Order(), imported.Order()); diff != "" {
		t.Errorf("order mismatch (-direct +imported):\n%s", diff)
	}
	if _, _, err := ImportDesktopConfig([]byte("upstreams:\n  a: {command: x}\n")); err == nil {
		t.Error("import of a credgate config succeeded, want an error")
	}
}

// readmeConfig returns the ```yaml block under "## Configuration" in the
// README.
func readmeConfig(t *testing.T, heading string) []byte {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## "+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("no yaml block under %q in README.md", heading)
	}
	return []byte(m[1])
}

// TestREADMEConfigSample is the regression test for issue 6 item 18: the
// README's own config samples pass validate (the credentials sample too).
func TestREADMEConfigSample(t *testing.T) {
	t.Parallel()
	for _, heading := range []string{"Configuration", "Credentials and their lifecycle"} {
		sample := readmeConfig(t, heading)
		// The sample may reference variables; give each one a value.
		var environ []string
		for _, m := range regexp.MustCompile(`\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(string(sample), -1) {
			environ = append(environ, m[1]+"=value-of-"+m[1])
		}
		if _, err := ParseConfig(sample, environ); err != nil {
			t.Errorf("the README's %q sample does not validate:\n%v\n%s", heading, err, sample)
		}
	}
}

// TestPassedThroughErrorPrefix is the regression test for issue 6 item 18:
// a TypeScript SDK server sends "MCP error -32602: ..." as its message and
// the TypeScript client prefixes it again; the gateway drops the prefix
// that repeats the code, so agents read it once.
func TestPassedThroughErrorPrefix(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	u := newTestUpstream(t, "a", "echo")
	u.srv.AddPrompt(&mcp.Prompt{Name: "strict", Arguments: []*mcp.PromptArgument{{Name: "city", Required: true}}},
		func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return nil, &jsonrpc.Error{Code: -32602, Message: "MCP error -32602: Invalid arguments for prompt strict: city: Required"}
		})
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a:\n    url: %s\n", u.url()))
	_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "a__strict"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		t.Fatalf("prompts/get error = %v, want a JSON-RPC error", err)
	}
	if je.Code != -32602 || je.Message != "Invalid arguments for prompt strict: city: Required" {
		t.Errorf("prompts/get error = %d %q, want -32602 without the repeated prefix", je.Code, je.Message)
	}
	// A prefix with another code is the upstream's own text: kept.
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "jsonrpc:MCP error -1: inner"}})
	if !errors.As(err, &je) || je.Message != "MCP error -1: inner" {
		t.Errorf("tools/call error = %v, want the message kept", err)
	}
}

// TestUpstreamProviderChecked is the regression test for issue 6 item 17 in
// the config: upstreams.<name>.provider, like --provider, must name a
// provider the classifier knows or one a classify rule defines (a typo was
// silently ignored).
func TestUpstreamProviderChecked(t *testing.T) {
	t.Parallel()
	msg := parseErr(t, "upstreams:\n  a: {command: x, provider: githb}\n")
	if want := `upstreams.a.provider: unknown provider "githb" (did you mean github?): want one of github, gitlab`; !strings.Contains(msg, want) {
		t.Errorf("error lacks %q:\n%s", want, msg)
	}
	if _, err := ParseConfig([]byte(`
upstreams:
  a: {command: x, provider: acme}
  b: {command: x, provider: azure}
  c: {command: x, provider: github}
classify:
  rules:
    - {provider: acme, match: {status: 403}, subtype: credential_revoked}
`), nil); err != nil {
		t.Errorf("providers a rule defines, aliases and built-ins: %v", err)
	}
}

// TestDesktopConfigJSONC is the regression test for issue 6 item 16 (found by
// trying the binary): VS Code's mcp.json is JSONC, with comments and
// trailing commas, and was refused as a YAML syntax error. It is read as it
// is, strings that look like comments stay intact, and a YAML file is never
// read differently ("//" in an unquoted URL is no comment).
func TestDesktopConfigJSONC(t *testing.T) {
	t.Parallel()
	jsonc := `{
  // .vscode/mcp.json
  "servers": {
    "fs": {"type": "stdio", "command": "/usr/bin/srv", /* inline */
           "args": ["http://a/b", "/* kept */", "a\"//b",],},
  },
}
`
	cfg, err := ParseConfig([]byte(jsonc), nil)
	if err != nil {
		t.Fatalf("JSONC desktop config: %v", err)
	}
	fs := cfg.Upstreams["fs"]
	if fs == nil {
		t.Fatalf("upstreams = %v, want fs", cfg.Order())
	}
	if diff := cmp.Diff([]string{"http://a/b", "/* kept */", `a"//b`}, fs.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	out, _, err := ImportDesktopConfig([]byte(jsonc))
	if err != nil || !strings.Contains(string(out), "fs:") {
		t.Errorf("import of JSONC = %q, %v", out, err)
	}
	cfg, err = ParseConfig([]byte("upstreams: {a: {url: http://h/mcp}}\n"), nil)
	if err != nil || cfg.Upstreams["a"].URL != "http://h/mcp" {
		t.Errorf("flow YAML with // in a URL: %v", err)
	}
	if _, err := ParseConfig([]byte("{\n  // a comment\n  \"upstreams\": {\"a\": {\"command\": \"x\",}\n}\n"), nil); err == nil || !strings.Contains(err.Error(), "line") {
		t.Errorf("broken JSONC: err = %v, want a parse error with its line", err)
	}
}

// TestInvalidURLRedacted is the regression test for issue 6 item 13
// (validate output; found by trying the binary): an invalid upstream url was
// shown whole in the error, password and api_key included.
func TestInvalidURLRedacted(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte(`upstreams:
  a: {url: "https://bob:pw-s3cr3t-value@host:badport/mcp?api_key=sk-query-s3cr3t&x=1#f"}
  b: {url: "ftp://host/mcp?token=tok-s3cr3t-value"}
`), nil)
	if err == nil {
		t.Fatal("invalid urls accepted")
	}
	msg := err.Error()
	for _, secret := range []string{"pw-s3cr3t-value", "sk-query-s3cr3t", "tok-s3cr3t-value"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error shows the secret %q:\n%s", secret, msg)
		}
	}
	for _, want := range []string{`"https://bob:[REDACTED]@host:badport/mcp?api_key=[REDACTED]&x=1#f"`, `"ftp://host/mcp?token=[REDACTED]"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %s:\n%s", want, msg)
		}
	}
}

// TestHeadersChecked is the regression test for issue 6 item 14 (found by
// trying the binary): a header name with a space or a value with a line
// break passed validate, then every request failed with net/http's "invalid
// header field" and the upstream was retried forever. Both are errors
// naming the key, without the value.
func TestHeadersChecked(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte("upstreams:\n  a: {url: \"https://h/mcp\", headers: {Authorization: \"Bearer sk-line\\nbreak-s3cr3t\", \"Bad Name\": x, X-Ok: \"a\\tb\"}}\n"), nil)
	if err == nil {
		t.Fatal("invalid headers accepted")
	}
	msg := err.Error()
	for _, want := range []string{"upstreams.a.headers.Authorization: the value contains a line break", "upstreams.a.headers.Bad Name: invalid header name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "X-Ok") {
		t.Errorf("error shows a header value or flags a valid header:\n%s", msg)
	}
}

// TestEnvOverrideDashedUpstream is the regression test for issue 6 item 14
// (env overrides; found by trying the binary): a shell cannot export a
// variable with '-' in its name, so an upstream named demo-http (the demo's,
// or any desktop entry such as "GitHub MCP") could not be overridden, and
// CREDGATE_UPSTREAMS__DEMO_HTTP__URL added an empty upstream demo_http that
// failed validation. It reaches demo-http; an upstream really named with
// '_' keeps its own variables.
func TestEnvOverrideDashedUpstream(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("upstreams:\n  demo-http: {url: \"https://a/mcp\"}\n  b_c: {command: x}\n  b-c: {command: y}\n"), []string{
		"CREDGATE_UPSTREAMS__DEMO_HTTP__URL=https://b/mcp",
		"CREDGATE_UPSTREAMS__DEMO_HTTP__HEADERS__Authorization=Bearer abcdefgh12345678",
		"CREDGATE_UPSTREAMS__B_C__TIMEOUT=5s",
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"demo-http", "b_c", "b-c"}, cfg.Order()); diff != "" {
		t.Errorf("upstreams (-want +got):\n%s", diff)
	}
	d := cfg.Upstreams["demo-http"]
	if d.URL != "https://b/mcp" || d.Headers["Authorization"] != "Bearer abcdefgh12345678" {
		t.Errorf("demo-http = %+v, want the overrides applied", d)
	}
	if cfg.Upstreams["b_c"].Timeout != 5*time.Second || cfg.Upstreams["b-c"].Timeout == 5*time.Second {
		t.Errorf("b_c timeout %s, b-c timeout %s: want the override on b_c only", cfg.Upstreams["b_c"].Timeout, cfg.Upstreams["b-c"].Timeout)
	}
}

// TestEnvOverrideDashedCredential: as for upstreams, CREDGATE_CREDENTIALS__
// GH_PAT__... reaches a credential named gh-pat; it quietly added a second
// credential gh_pat instead (found trying the gateway from outside).
func TestEnvOverrideDashedCredential(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("credentials:\n  gh-pat: {source: {env: A_TOKEN}}\nupstreams:\n  a: {url: \"https://a/mcp\", credential: gh-pat}\n"), []string{
		"CREDGATE_CREDENTIALS__GH_PAT__SOURCE__ENV=B_TOKEN",
		"CREDGATE_CREDENTIALS__GH_PAT__EXPIRES_AT=2030-01-01T00:00:00Z",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Credentials["gh_pat"]; ok || len(cfg.Credentials) != 1 {
		t.Errorf("credentials %v; want gh-pat alone", slices.Sorted(maps.Keys(cfg.Credentials)))
	}
	c := cfg.Credentials["gh-pat"]
	if c.Source.Env != "B_TOKEN" || c.ExpiresAt.Year() != 2030 {
		t.Errorf("gh-pat = %+v, want the overrides applied", c)
	}
}

// TestTimeValueMessage: a time that is not RFC 3339 gets an example, not
// the layout Go's parser names ("cannot parse "tomorrow" as "2006"").
func TestTimeValueMessage(t *testing.T) {
	t.Parallel()
	msg := parseErr(t, "credentials:\n  k: {source: {value: abc}, expires_at: tomorrow}\nupstreams:\n  a: {url: 'http://127.0.0.1:1/mcp', credential: k}\n")
	if want := `credentials.k.expires_at: want an RFC 3339 time such as "2027-01-31T09:00:00Z", got "tomorrow"`; !strings.Contains(msg, want) || strings.Contains(msg, "2006") {
		t.Errorf("error:\n%s\nwant it to contain\n%s", msg, want)
	}
}

// TestMisplacedTokenNotQuoted: a token pasted into the wrong key (timeout,
// provider) is not quoted whole in the error; short or non-token values
// (a duration, a time with colons) still are, so the error stays useful.
func TestMisplacedTokenNotQuoted(t *testing.T) {
	t.Parallel()
	const token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
	msg := parseErr(t, "upstreams:\n  a: {url: \"http://127.0.0.1:1/mcp\", timeout: \""+token+"\", provider: \""+token+"\"}\n")
	if strings.Contains(msg, token) || !strings.Contains(msg, `"ghp_"… (40 characters`) {
		t.Errorf("error quotes the misplaced token:\n%s", msg)
	}
	for in, want := range map[string]string{
		"30 seconds":                            `"30 seconds"`,
		"2027-01-31 09:00:00 +0000":             `"2027-01-31 09:00:00 +0000"`,
		"abc":                                   `"abc"`,
		"sk-proj-abcdefghijklmnopqrs":           `"sk-p"… (27 characters`,
		"Bearer ghp_abcdefghijklmnopqrstuvwxyz": `"Bear"… (37 characters`,
	} {
		if got := quoteShort(in); !strings.HasPrefix(got, want) {
			t.Errorf("quoteShort(%q) = %s, want %s...", in, got, want)
		}
	}
}

// Regression test for a trial's finding: import refused desktop configs
// that validate and serve took, with a whole url or an agent key in a
// variable (each variable stood for its own name: not a url, too short for
// a key). Set variables are used; a result that fails only for want of
// unset ones is printed, with a warning naming them.
func TestImportDesktopConfigVariables(t *testing.T) {
	const urlVar = "CREDGATE_TEST_IMPORT_URL_UNSET_X"
	const keyVar = "CREDGATE_TEST_IMPORT_KEY_SET_X"
	t.Setenv(keyVar, "agent-key-0123456789abcdef0123456789")
	doc := `{"mcpServers":{"remote":{"type":"http","url":"${` + urlVar + `}","headers":{"Authorization":"Bearer ${REMOTE_TOKEN_X}"}}},
	 "auth":{"keys":[{"name":"desk","key":"${` + keyVar + `}"}]}}`
	out, warnings, err := ImportDesktopConfig([]byte(doc))
	if err != nil {
		t.Fatalf("ImportDesktopConfig: %v", err)
	}
	if !bytes.Contains(out, []byte("${"+urlVar+"}")) || !bytes.Contains(out, []byte("${"+keyVar+"}")) {
		t.Errorf("the references were not kept:\n%s", out)
	}
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, urlVar) && strings.Contains(w, "not set here") }) {
		t.Errorf("warnings %q; want one naming %s as not set", warnings, urlVar)
	}
	t.Setenv(urlVar, "https://mcp.example.com/mcp")
	t.Setenv("REMOTE_TOKEN_X", "remote-token-0123456789")
	if _, warnings, err := ImportDesktopConfig([]byte(doc)); err != nil || slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, "not set here") }) {
		t.Errorf("with every variable set: %v, %q; want checked, no warning", err, warnings)
	}
	// A failure of a set variable is one, whatever else is unset, even
	// beside a failure an unset variable explains (the url).
	t.Setenv(keyVar, "short")
	t.Setenv("REMOTE_TOKEN_X", "")
	os.Unsetenv("REMOTE_TOKEN_X")
	if _, _, err := ImportDesktopConfig([]byte(doc)); err == nil || !strings.Contains(err.Error(), "auth.keys[0].key") {
		t.Errorf("a set key too short: %v; want refused, naming the key", err)
	}
	os.Unsetenv(urlVar)
	if _, _, err := ImportDesktopConfig([]byte(doc)); err == nil || !strings.Contains(err.Error(), "auth.keys[0].key") {
		t.Errorf("a set key too short beside an unset url: %v; want refused, naming the key", err)
	}
}
