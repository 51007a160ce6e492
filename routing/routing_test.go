package routing

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckName(t *testing.T) {
	t.Parallel()
	if err := CheckName("ünïcode"); err == nil || !strings.Contains(err.Error(), `'ü'`) {
		t.Errorf("CheckName(ünïcode) = %v; want it to name 'ü', not its first byte", err)
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"github__list_issues", true},
		{"a.b-c_D9", true},
		{"", false},
		{"a/b", false},
		{"a b", false},
		{"ünïcode", false},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	t.Parallel()
	if err := CheckPrefix("a__b", "__"); err == nil {
		t.Error("CheckPrefix(a__b, __) = nil, want error: prefix contains separator")
	}
	if err := CheckPrefix("", "__"); err != nil {
		t.Errorf("CheckPrefix(\"\") = %v, want nil", err)
	}
	if err := CheckPrefix("git-hub_1", "__"); err != nil {
		t.Errorf("CheckPrefix(git-hub_1) = %v, want nil", err)
	}
	if err := CheckSeparator("/"); err == nil {
		t.Error("CheckSeparator(/) = nil, want error")
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	got := Build("__", []Source{
		{Upstream: "a", Prefix: "", Names: []string{"echo", "bad name", "dup", "dup"}},
		{Upstream: "b", Prefix: "", Names: []string{"echo", "only_b"}},
		{Upstream: "c", Prefix: "c", Names: []string{"echo", strings.Repeat("x", 62), ""}},
	})
	wantTargets := map[string]Target{
		"echo":    {Upstream: "a", Name: "echo"},
		"dup":     {Upstream: "a", Name: "dup"},
		"only_b":  {Upstream: "b", Name: "only_b"},
		"c__echo": {Upstream: "c", Name: "echo"},
	}
	if diff := cmp.Diff(wantTargets, got.Targets); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}
	var problems []string
	for _, p := range got.Problems {
		problems = append(problems, p.Upstream+":"+p.Name)
	}
	want := []string{"a:bad name", "a:dup", "b:echo", "c:" + strings.Repeat("x", 62), "c:"} // "": exposed as "c__"
	if diff := cmp.Diff(want, problems); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestOwner(t *testing.T) {
	t.Parallel()
	prefixes := []string{"", "h", "a", "a_", "gh"}
	for name, want := range map[string]string{
		"h__echo":  "h",
		"echo":     "",
		"a__x":     "a",
		"a___x":    "a_", // longest wins
		"gh__x":    "gh",
		"ghx__y":   "",
		"h_echo":   "",
		"h__":      "h",
		"x__h__y":  "",
		"__h__y":   "",
		"a__b__cd": "a",
	} {
		if got := Owner(name, "__", prefixes); got != want {
			t.Errorf("Owner(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestBuildNoShadowing is the regression test for issue 6 item 5 at the name
// rule: an unprefixed upstream offering "h__echo" must not take the name of
// upstream h's tool "echo", wherever it comes in the config, and whether or
// not h lists anything; and a prefix that extends another ("a_" after "a")
// keeps its own names.
func TestBuildNoShadowing(t *testing.T) {
	t.Parallel()
	for _, order := range [][]Source{
		{
			{Upstream: "plain", Prefix: "", Names: []string{"h__echo", "h__only_plain", "echo", "a___x", "hecho"}},
			{Upstream: "h", Prefix: "h", Names: []string{"echo"}},
			{Upstream: "a", Prefix: "a", Names: []string{"_x", "y"}},
			{Upstream: "a_", Prefix: "a_", Names: []string{"x"}},
		},
		{
			{Upstream: "h", Prefix: "h", Names: []string{"echo"}},
			{Upstream: "a_", Prefix: "a_", Names: []string{"x"}},
			{Upstream: "a", Prefix: "a", Names: []string{"_x", "y"}},
			{Upstream: "plain", Prefix: "", Names: []string{"h__echo", "h__only_plain", "echo", "a___x", "hecho"}},
		},
	} {
		got := Build("__", order)
		wantTargets := map[string]Target{
			"h__echo": {Upstream: "h", Name: "echo"},
			"echo":    {Upstream: "plain", Name: "echo"},
			"hecho":   {Upstream: "plain", Name: "hecho"},
			"a___x":   {Upstream: "a_", Name: "x"},
			"a__y":    {Upstream: "a", Name: "y"},
		}
		if diff := cmp.Diff(wantTargets, got.Targets); diff != "" {
			t.Errorf("targets mismatch (-want +got):\n%s", diff)
		}
		refused := map[string]string{}
		for _, p := range got.Problems {
			refused[p.Upstream+":"+p.Name] = p.Reason
		}
		want := []string{"plain:h__echo", "plain:h__only_plain", "plain:a___x", "a:_x"}
		if len(refused) != len(want) {
			t.Errorf("problems = %v, want exactly %v", refused, want)
		}
		for _, w := range want {
			if r, ok := refused[w]; !ok || !strings.Contains(r, "carries the prefix") {
				t.Errorf("problem for %s = %q, want it refused for carrying another upstream's prefix", w, r)
			}
		}
		if r := refused["plain:h__echo"]; !strings.Contains(r, `upstream "h"`) {
			t.Errorf("reason %q does not name the upstream it would shadow", r)
		}
	}
}
