package routing

import (
	"strings"
	"testing"
)

// TestGlob is the regression test for issue 6 item 4 at the name rule: '*'
// matches across '/', so deny "*_delete" catches "repo/drop_delete", which
// path.Match let through.
func TestGlob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"*_delete", "repo/drop_delete", true},
		{"*_delete", "drop_delete", true},
		{"*_delete", "_delete", true},
		{"*_delete", "drop_delete_not", false},
		{"*", "", true},
		{"*", "a/b/c", true},
		{"a*b", "a/x/b", true},
		{"a*b*c", "abxc", true},
		{"a*b*c", "acb", false},
		{"**", "x/y", true},
		{"?", "/", true},
		{"?", "é", true}, // one character, not one byte
		{"?", "ab", false},
		{"list_?", "list_a", true},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"exact", "an exact", false},
		{"a.b", "axb", false}, // '.' is literal
		{"a+", "aa", false},   // '+' is literal
		{"a+", "a+", true},
		{"(x|y)", "x", false},
		{"[abc]x", "bx", true},
		{"[abc]x", "dx", false},
		{"[a-c]", "b", true},
		{"[a-c]", "d", false},
		{"[!a-c]", "d", true},
		{"[^a-c]", "b", false},
		{"[!a]", "/", true},
		{"[a-]", "-", true},
		{"[-a]", "-", true},
		{`[\]]`, "]", true},
		{`[\\]`, `\`, true},
		{"[.]", "x", false},
		{`\*`, "*", true},
		{`\*`, "x", false},
		{`\?`, "?", true},
		{`a\[b`, "a[b", true},
		{"line", "line\n", false},
		{"*", "multi\nline", true},
	} {
		g, err := CompileGlob(tc.pattern)
		if err != nil {
			t.Errorf("CompileGlob(%q): %v", tc.pattern, err)
			continue
		}
		if got := g.Match(tc.name); got != tc.want {
			t.Errorf("glob %q matching %q = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestGlobErrors(t *testing.T) {
	t.Parallel()
	for pattern, want := range map[string]string{
		"[":       "unterminated character class",
		"[abc":    "unterminated character class",
		"[]":      "empty character class",
		"[!]":     "empty character class",
		"[z-a]":   "backwards",
		`a\`:      "trailing backslash",
		`[a\`:     "unterminated character class",
		"[a-":     "unterminated character class",
		"ok[a-\\": "unterminated character class",
	} {
		_, err := CompileGlob(pattern)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), pattern) {
			t.Errorf("CompileGlob(%q) = %v, want an error naming the pattern and %q", pattern, err, want)
		}
	}
}

func TestFilter(t *testing.T) {
	t.Parallel()
	f, err := NewFilter([]string{"list_*", "get_*"}, []string{"*_secret", "*/admin/*"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"list_issues":          true,
		"get_repo/x":           true,
		"list_secret":          false, // deny wins
		"list_a/admin/b":       false,
		"delete":               false, // not allowed
		"list_repo/top_secret": false,
	} {
		if got := f.Allowed(name); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", name, got, want)
		}
	}
	denyOnly, err := NewFilter(nil, []string{"*_delete"})
	if err != nil {
		t.Fatal(err)
	}
	if !denyOnly.Allowed("read") || denyOnly.Allowed("repo/drop_delete") {
		t.Error("a deny-only filter must allow the rest and deny across '/'")
	}
	var none *Filter
	if !none.Allowed("anything") {
		t.Error("a nil filter must allow everything")
	}
	if _, err := NewFilter([]string{"ok"}, []string{"["}); err == nil {
		t.Error("NewFilter accepted an invalid deny glob")
	}
}
