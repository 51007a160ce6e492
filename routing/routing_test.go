package routing

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckName(t *testing.T) {
	t.Parallel()
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
		{Upstream: "c", Prefix: "c", Names: []string{"echo", strings.Repeat("x", 62)}},
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
	want := []string{"a:bad name", "a:dup", "b:echo", "c:" + strings.Repeat("x", 62)}
	if diff := cmp.Diff(want, problems); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}
