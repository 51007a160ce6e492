package gateway

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
)

// Desktop-client configs: the files Claude Desktop, Claude Code, Cursor,
// Windsurf, Cline and VS Code keep their MCP servers in. They are JSON (which
// the YAML parser reads) with the servers under a top-level "mcpServers"
// object, or "servers" for VS Code:
//
//	{"mcpServers": {"github": {"command": "npx", "args": ["-y", "@x/github"],
//	                           "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}},
//	                "remote": {"type": "http", "url": "https://mcp.example.com/mcp",
//	                           "headers": {"Authorization": "Bearer ${TOKEN}"}}}}
//
// Such a file is accepted by --config as it is: each entry becomes an
// upstream, its name lower-cased with characters outside [a-z0-9_-] replaced
// by '-' ("GitHub MCP" serves github-mcp__<tool>). Entry keys:
//
//	command, args, env, cwd, url, headers   as in credgate
//	type, transport, transportType          stdio; http or streamable-http; sse
//	serverUrl (Windsurf), httpUrl (Gemini)  url (httpUrl also means streamable-http)
//	disabled: true                          the entry is skipped
//	disabledTools, excludeTools             tools.deny
//	includeTools                            tools.allow
//	envFile                                 an error: copy the variables into env
//	autoApprove, alwaysAllow, timeout, ...  ignored with a warning (approval is the
//	                                        client's business; clients disagree on the
//	                                        unit of timeout: set upstreams.<name>.timeout)
//
// Any other entry key is an error. Credgate's own top-level keys (listen, ...)
// are honoured; other top-level keys (a client's preferences) are ignored with
// a warning. `gateway import FILE` prints the equivalent credgate YAML.

// desktopKeys are the top-level keys that hold a desktop client's servers.
var desktopKeys = []string{"mcpServers", "servers"}

// desktopIgnored are entry keys desktop clients use that mean nothing to a
// gateway, with why they are ignored.
var desktopIgnored = map[string]string{
	"autoApprove":    "tool approval is the agent's business",
	"alwaysAllow":    "tool approval is the agent's business",
	"trust":          "tool approval is the agent's business",
	"timeout":        "clients disagree on its unit; set upstreams.<name>.timeout (a duration, default 60s) in a credgate config",
	"networkTimeout": "set upstreams.<name>.timeout (a duration, default 60s) in a credgate config",
	"description":    "credgate does not use it",
	"watchPaths":     "credgate does not watch files",
	"dev":            "credgate does not watch files",
	"gallery":        "credgate does not use it",
	"version":        "credgate does not use it",
}

// desktopEntryKeys are every entry key a desktop config may use, for "did
// you mean" hints.
var desktopEntryKeys = []string{"command", "args", "env", "cwd", "url", "headers", "type", "transport", "transportType",
	"serverUrl", "httpUrl", "disabled", "disabledTools", "excludeTools", "includeTools", "envFile"}

// isDesktop reports whether a raw config holds a desktop client's servers.
func isDesktop(raw map[string]any) bool {
	for _, k := range desktopKeys {
		if _, ok := raw[k]; ok {
			return true
		}
	}
	return false
}

// desktop is the translation of a desktop config's servers into upstreams.
type desktop struct {
	order    []string          // upstream names, in file order
	source   map[string]string // upstream name -> its key in the file (mcpServers.<name>)
	warnings []string
	errs     []error
	// reported are the entry keys reported in errs.
	reported []string
}

// dropForeignKeys removes the top-level keys of a desktop config that are
// not credgate settings, with a warning each.
func (d *desktop) dropForeignKeys(raw map[string]any) {
	own := fieldTags(reflect.TypeFor[Config]())
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if slices.Contains(own, k) || slices.Contains(desktopKeys, k) {
			continue
		}
		why := "not a credgate setting"
		if k == "inputs" {
			why = "VS Code input prompts are not supported; a ${input:...} reference is an error"
		}
		d.warnings = append(d.warnings, fmt.Sprintf("%s: ignored: %s", k, why))
		delete(raw, k)
	}
}

// translate moves the servers of raw's desktop keys into raw["upstreams"].
// listed gives each desktop key's entry names in file order.
func (d *desktop) translate(raw map[string]any, listed map[string][]string) {
	d.source = map[string]string{}
	ups, _ := raw["upstreams"].(map[string]any)
	if ups == nil {
		if _, ok := raw["upstreams"]; ok && raw["upstreams"] != nil {
			d.errs = append(d.errs, &keyError{key: "upstreams", msg: "want a mapping"})
			return
		}
		ups = map[string]any{}
	}
	for name := range ups {
		d.source[name] = "upstreams." + name
	}
	for _, dk := range desktopKeys {
		v, ok := raw[dk]
		if !ok {
			continue
		}
		delete(raw, dk)
		servers, ok := v.(map[string]any)
		if !ok {
			if v != nil {
				d.errs = append(d.errs, &keyError{key: dk, msg: "want a mapping of server names to servers, got " + describe(v)})
			}
			continue
		}
		for _, orig := range orderedNames(listed[dk], servers) {
			e, ok := servers[orig]
			if !ok {
				continue
			}
			src := dk + "." + orig
			name := upstreamName(orig)
			up, skip := d.entry(src, e)
			if skip {
				continue
			}
			switch other, taken := d.source[name]; {
			case name == "":
				d.errs = append(d.errs, &keyError{key: src, msg: "the name has no letter or digit to make an upstream name of; rename it"})
				continue
			case taken:
				d.errs = append(d.errs, &keyError{key: src, msg: fmt.Sprintf("becomes upstream %q, like %s; rename one of them", name, other)})
				continue
			}
			d.source[name] = src
			d.order = append(d.order, name)
			ups[name] = up
		}
	}
	raw["upstreams"] = ups
}

// entry translates one server entry; skip is set for a disabled or broken one.
func (d *desktop) entry(src string, v any) (up map[string]any, skip bool) {
	e, ok := v.(map[string]any)
	if !ok {
		d.errs = append(d.errs, &keyError{key: src, msg: "want a mapping (command, args, env or url, headers), got " + describe(v)})
		return nil, true
	}
	bad := func(k, format string, args ...any) {
		d.errs = append(d.errs, &keyError{key: src + "." + k, msg: fmt.Sprintf(format, args...)})
		d.reported = append(d.reported, src+"."+k)
	}
	up = map[string]any{}
	var transport, transportKey string
	setTransport := func(k string, t string) {
		if transport != "" && transport != t {
			bad(k, "transport %s contradicts %s (%s)", t, transportKey, transport)
			return
		}
		transport, transportKey = t, k
	}
	list := func(k string) []any {
		l, ok := e[k].([]any)
		if !ok && e[k] != nil {
			bad(k, "want a list of tool names, got %s", describe(e[k]))
		}
		return l
	}
	var allow, deny []any
	for _, k := range slices.Sorted(maps.Keys(e)) {
		val := e[k]
		switch k {
		case "command", "args", "env", "cwd", "headers":
			up[k] = val
		case "url", "serverUrl", "httpUrl":
			if _, dup := up["url"]; dup {
				bad(k, "a second url; keep one of url, serverUrl and httpUrl")
				continue
			}
			up["url"] = val
			if k == "httpUrl" {
				setTransport(k, TransportStreamableHTTP)
			}
		case "type", "transport", "transportType":
			s, _ := val.(string)
			switch strings.ToLower(s) {
			case "stdio":
				setTransport(k, TransportStdio)
			case "http", "streamable-http", "streamablehttp", "streamable_http":
				setTransport(k, TransportStreamableHTTP)
			case "sse":
				setTransport(k, TransportSSE)
			default:
				if s == "" {
					bad(k, "want stdio, http, streamable-http or sse, got %s", describe(val))
				} else {
					bad(k, "unknown transport %q: want stdio, http, streamable-http or sse", s)
				}
			}
		case "disabled":
			b, ok := val.(bool)
			if !ok {
				bad(k, "want true or false, got %s", describe(val))
				continue
			}
			skip = b
		case "disabledTools", "excludeTools":
			deny = append(deny, list(k)...)
		case "includeTools":
			allow = append(allow, list(k)...)
		case "envFile":
			bad(k, "not supported: put the variables in env (values may be ${NAME} references to the gateway's environment)")
		default:
			if why, ok := desktopIgnored[k]; ok {
				d.warnings = append(d.warnings, fmt.Sprintf("%s.%s: ignored: %s", src, k, why))
				continue
			}
			msg := "unknown key"
			if s := suggest(k, desktopEntryKeys); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			bad(k, "%s", msg)
		}
	}
	if skip {
		d.warnings = append(d.warnings, fmt.Sprintf("%s: disabled: skipped", src))
		return nil, true
	}
	if transport != "" {
		up["transport"] = transport
	}
	if len(allow) > 0 || len(deny) > 0 {
		tools := map[string]any{}
		if len(allow) > 0 {
			tools["allow"] = allow
		}
		if len(deny) > 0 {
			tools["deny"] = deny
		}
		up["tools"] = tools
	}
	return up, false
}

var notNameChars = regexp.MustCompile(`[^a-z0-9_-]+`)

// upstreamName turns a desktop server's name into an upstream name:
// lower-cased, runs of other characters replaced by '-', no leading or
// trailing '-' or '_', and no "__" (the default separator).
func upstreamName(s string) string {
	n := notNameChars.ReplaceAllString(strings.ToLower(s), "-")
	for strings.Contains(n, "__") {
		n = strings.ReplaceAll(n, "__", "_")
	}
	return strings.Trim(n, "-_")
}

// renameKey maps an error's key under upstreams.<name> to the desktop key
// the upstream came from, so that errors point into the user's file.
func (d *desktop) renameKey(msg string) string {
	for name, src := range d.source {
		p := "upstreams." + name
		if src == p || !strings.HasPrefix(msg, p) || len(msg) == len(p) {
			continue
		}
		if c := msg[len(p)]; c == '.' || c == ':' || c == '[' {
			return src + msg[len(p):]
		}
	}
	return msg
}

// upstreamKey maps a key of the file (mcpServers.<name>.serverUrl) to the
// upstream key its value went to (upstreams.<upstream>.url).
func (d *desktop) upstreamKey(fileKey string) (string, bool) {
	best, bestName := "", ""
	for name, src := range d.source {
		if len(src) <= len(best) || !strings.HasPrefix(fileKey, src) {
			continue
		}
		if rest := fileKey[len(src):]; rest == "" || rest[0] == '.' || rest[0] == '[' {
			best, bestName = src, name
		}
	}
	if best == "" {
		return "", false
	}
	rest := fileKey[len(best):]
	for _, alias := range []string{".serverUrl", ".httpUrl"} {
		if r, ok := strings.CutPrefix(rest, alias); ok && (r == "" || r[0] == '.') {
			rest = ".url" + r
		}
	}
	return "upstreams." + bestName + rest, true
}

// ImportDesktopConfig translates a desktop client's MCP config (JSON or
// YAML with a top-level mcpServers or servers object) into credgate YAML.
// ${NAME} references are kept as they are (${env:NAME} becomes ${NAME}), so
// no secret is copied out of the environment. It returns the warnings about
// what was skipped or ignored, and an error listing every problem when the
// result would not be a valid config.
func ImportDesktopConfig(data []byte) (out []byte, warnings []string, err error) {
	raw, listed, err := parseRaw(data)
	if err != nil {
		return nil, nil, err
	}
	if !isDesktop(raw) {
		return nil, nil, fmt.Errorf("config: no mcpServers or servers object: not a desktop client's MCP config")
	}
	var d desktop
	d.dropForeignKeys(raw)
	rewriteEnvRefs(raw)
	d.translate(raw, listed)
	if len(d.errs) > 0 {
		return nil, d.warnings, joinLines(d.errs, d.renameKey)
	}
	out, err = renderYAML(raw, d.order, d.source)
	if err != nil {
		return nil, d.warnings, fmt.Errorf("config: %w", err)
	}
	// The result must load, with the variables of this environment. One
	// not set here stands for its own name, made long enough to pass for a
	// key, which keeps a templated url parseable ("https://${HOST}/mcp");
	// when the result fails only for want of such variables (a whole url
	// in one), it is printed with a warning naming them, to check with
	// `gateway validate` where they are set (it was refused, though
	// validate and serve took it: found trying the gateway from outside).
	var unset []string
	lookup := func(name string) (string, bool) {
		if v, ok := os.LookupEnv(name); ok {
			return v, true
		}
		if !slices.Contains(unset, name) {
			unset = append(unset, name)
		}
		return name + "-unset-0123456789abcdef", true
	}
	_, err = parseConfig(out, loadOptions{lookup: lookup})
	slices.Sort(unset)
	// A failure is put down to the unset variables only when each of its
	// problems (a line each) names one of them (messages quote a value's
	// text before expansion): a key too short beside a url in an unset
	// variable is a failure (found trying the gateway from outside).
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if strings.TrimSpace(line) != "" && !slices.ContainsFunc(unset, func(n string) bool { return strings.Contains(line, n) }) {
				return nil, d.warnings, err
			}
		}
	}
	switch {
	case err != nil:
		d.warnings = append(d.warnings, fmt.Sprintf("not checked whole: it uses variables not set here (%s); set them and run gateway validate: %s",
			strings.Join(unset, ", "), strings.ReplaceAll(err.Error(), "\n", " ")))
	case len(unset) > 0:
		d.warnings = append(d.warnings, fmt.Sprintf("it uses variables not set here (%s): set them where the gateway runs", strings.Join(unset, ", ")))
	}
	return out, d.warnings, nil
}

var envRefRE = regexp.MustCompile(`\$?\$\{env:`)

// rewriteEnvRefs turns ${env:NAME} into ${NAME} in every string under v.
func rewriteEnvRefs(v any) any {
	switch x := v.(type) {
	case string:
		return envRefRE.ReplaceAllStringFunc(x, func(m string) string {
			if strings.HasPrefix(m, "$$") {
				return m // escaped: the literal text ${env:
			}
			return "${"
		})
	case map[string]any:
		for k, c := range x {
			x[k] = rewriteEnvRefs(c)
		}
	case []any:
		for i, c := range x {
			x[i] = rewriteEnvRefs(c)
		}
	}
	return v
}

// renderYAML writes a raw credgate config as YAML: top-level keys and each
// upstream's keys in the order of the Config struct, upstreams in order.
func renderYAML(raw map[string]any, order []string, source map[string]string) ([]byte, error) {
	root, err := yamlNode(raw, reflect.TypeFor[Config]())
	if err != nil {
		return nil, err
	}
	root.HeadComment = "credgate config written by `gateway import`; check it with `gateway validate FILE`"
	// Upstreams in file order, each noting its name in the source file.
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "upstreams" {
			continue
		}
		ups := raw["upstreams"].(map[string]any)
		m := &yamlv3.Node{Kind: yamlv3.MappingNode}
		for _, name := range orderedNames(order, ups) {
			v, err := yamlNode(ups[name], reflect.TypeFor[UpstreamConfig]())
			if err != nil {
				return nil, err
			}
			k := &yamlv3.Node{Kind: yamlv3.ScalarNode, Value: name}
			if src := source[name]; !strings.HasSuffix(src, "."+name) {
				k.HeadComment = "from " + src
			}
			m.Content = append(m.Content, k, v)
		}
		root.Content[i+1] = m
	}
	var b bytes.Buffer
	enc := yamlv3.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

// orderedNames returns the keys of m: those in order first, as they stand
// there, then the rest sorted. order is not modified.
func orderedNames(order []string, m map[string]any) []string {
	names := slices.Clone(order)
	for _, n := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// yamlNode encodes v, putting the keys of a struct-typed mapping in field
// order.
func yamlNode(v any, t reflect.Type) (*yamlv3.Node, error) {
	m, ok := v.(map[string]any)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if !ok || t == nil || t.Kind() != reflect.Struct {
		var n yamlv3.Node
		if err := n.Encode(v); err != nil {
			return nil, err
		}
		if n.Kind == yamlv3.SequenceNode && !slices.ContainsFunc(n.Content, func(c *yamlv3.Node) bool { return c.Kind != yamlv3.ScalarNode }) {
			n.Style = yamlv3.FlowStyle // args: [-y, "@x/server"]
		}
		return &n, nil
	}
	n := &yamlv3.Node{Kind: yamlv3.MappingNode}
	for _, k := range orderedNames(fieldTags(t), m) {
		c, ok := m[k]
		if !ok {
			continue
		}
		ft, _ := fieldByTag(t, k)
		cn, err := yamlNode(c, ft)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &yamlv3.Node{Kind: yamlv3.ScalarNode, Value: k}, cn)
	}
	return n, nil
}

// stripJSONC turns JSON with comments (// and /* */) and trailing commas, as
// VS Code's mcp.json allows them, into JSON, keeping every newline so that
// parse errors keep their line numbers. ok is false when data does not look
// like a JSON object (its first token is not '{') or has nothing to strip.
func stripJSONC(data []byte) (out []byte, ok bool) {
	out = make([]byte, 0, len(data))
	changed := false
	first := true // before the first token
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '"':
			if first {
				return nil, false
			}
			j := i + 1
			for j < len(data) && data[j] != '"' && data[j] != '\n' {
				if data[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(data)-1)
			out = append(out, data[i:j+1]...)
			i = j
		case c == '/' && i+1 < len(data) && data[i+1] == '/':
			for i < len(data) && data[i] != '\n' {
				out = append(out, ' ')
				i++
			}
			i--
			changed = true
		case c == '/' && i+1 < len(data) && data[i+1] == '*':
			end := bytes.Index(data[i+2:], []byte("*/"))
			if end < 0 {
				return nil, false
			}
			for _, b := range data[i : i+2+end+2] {
				if b != '\n' {
					b = ' '
				}
				out = append(out, b)
			}
			i += 2 + end + 1
			changed = true
		case c == ',':
			j := i + 1
			for j < len(data) && (data[j] == ' ' || data[j] == '\t' || data[j] == '\n' || data[j] == '\r') {
				j++
			}
			if j < len(data) && (data[j] == '}' || data[j] == ']') {
				out = append(out, ' ')
				changed = true
			} else {
				out = append(out, c)
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			out = append(out, c)
		default:
			if first && c != '{' {
				return nil, false
			}
			first = false
			out = append(out, c)
		}
	}
	return out, changed && !first
}
