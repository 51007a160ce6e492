package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
)

// Regression test for issue 9 (policy semantics): denies subtract, allow
// lists add up, no allow list anywhere means every tool; an agent on a tools
// allow list reads only the resources a resources.allow lists; with
// policies configured, an agent no grant covers may use nothing.
func TestPolicyGrants(t *testing.T) {
	t.Parallel()
	cfg := &Config{
		Auth: AuthConfig{Keys: []APIKeyConfig{
			{Name: "open"},
			{Name: "listed", Tools: ToolFilter{Allow: []string{"gh__list_*"}}},
			{Name: "both", Tools: ToolFilter{Allow: []string{"gh__get_*"}}},
			{Name: "denied", Tools: ToolFilter{Deny: []string{"*delete*"}}},
			{Name: "paced", Rate: Rate{N: 5, Per: 1e9}},
		}},
		Policies: []PolicyConfig{
			{Agents: []string{"both"}, Tools: ToolFilter{Allow: []string{"slack__*"}, Deny: []string{"slack__admin_*"}}},
			{Agents: []string{"both"}, Resources: ToolFilter{Allow: []string{"file:///public/*"}}},
			{Agents: []string{"denied"}, Tools: ToolFilter{Deny: []string{"gh__*"}}},
			{Scopes: []string{"repo:read"}, Tools: ToolFilter{Allow: []string{"gh__get_*"}}},
			{Agents: []string{"svc-*"}, Scopes: []string{"admin"}},
		},
	}
	ps := newPolicySet(cfg, nil)
	key := func(name string) *auth.TokenInfo {
		return &auth.TokenInfo{UserID: name, Extra: map[string]any{agentKindKey: agentKindAPIKey}}
	}
	for _, tt := range []struct {
		agent    *auth.TokenInfo
		tool     string
		resource string
		tOK, rOK bool
	}{
		{agent: key("open"), tool: "gh__delete_repo", resource: "file:///x", tOK: false, rOK: false}, // policies configured, no grant
		{agent: key("listed"), tool: "gh__list_issues", resource: "file:///public/a", tOK: true, rOK: false},
		{agent: key("listed"), tool: "gh__get_issue", tOK: false},
		{agent: key("both"), tool: "gh__get_issue", resource: "file:///public/a", tOK: true, rOK: true},
		{agent: key("both"), tool: "slack__post", resource: "file:///private/a", tOK: true, rOK: false},
		{agent: key("both"), tool: "slack__admin_kick", tOK: false},
		{agent: key("both"), tool: "gh__list_issues", tOK: false},
		{agent: key("denied"), tool: "slack__post", resource: "file:///x", tOK: true, rOK: true},
		{agent: key("denied"), tool: "gh__get_issue", tOK: false},
		{agent: key("denied"), tool: "x__delete", tOK: false},
		{agent: key("paced"), tool: "anything", resource: "file:///x", tOK: true, rOK: true}, // a rate alone covers
		{agent: &auth.TokenInfo{UserID: "user-1", Scopes: []string{"repo:read", "x"}}, tool: "gh__get_issue", tOK: true},
		{agent: &auth.TokenInfo{UserID: "user-1", Scopes: []string{"x"}}, tool: "gh__get_issue", tOK: false},
		{agent: &auth.TokenInfo{UserID: "svc-a", Scopes: []string{"admin"}}, tool: "gh__delete_repo", resource: "file:///x", tOK: true, rOK: true},
		{agent: &auth.TokenInfo{UserID: "svc-a"}, tool: "gh__delete_repo", tOK: false},
		// A token whose subject is a key's name does not get the key's grants.
		{agent: &auth.TokenInfo{UserID: "paced"}, tool: "anything", tOK: false},
	} {
		st := ps.state(tt.agent)
		if got := st.tool(tt.tool); got != tt.tOK {
			t.Errorf("%s %v: tool %s = %t, want %t", tt.agent.UserID, tt.agent.Scopes, tt.tool, got, tt.tOK)
		}
		if tt.resource != "" {
			if got := st.resource(tt.resource); got != tt.rOK {
				t.Errorf("%s: resource %s = %t, want %t", tt.agent.UserID, tt.resource, got, tt.rOK)
			}
		}
	}
	// No policies: a key without tools may use everything, but the
	// gateway's own health resource, which is ops data like /health.
	open := newPolicySet(&Config{Auth: AuthConfig{Keys: []APIKeyConfig{{Name: "k"}}}}, nil).state(key("k"))
	if !open.all || !open.tool("x") || !open.resource("y") {
		t.Error("without policies, a key without tools is restricted")
	}
	if open.resource(HealthURI) {
		t.Errorf("an agent no grant lists it for reads %s", HealthURI)
	}
	orch := newPolicySet(&Config{Auth: AuthConfig{Keys: []APIKeyConfig{{Name: "o", Resources: ToolFilter{Allow: []string{"credgate://*"}}}}}}, nil).state(key("o"))
	if !orch.resource(HealthURI) {
		t.Errorf("an agent a resources.allow lists it for cannot read %s", HealthURI)
	}
	// The lowest rate of those that apply holds.
	ps = newPolicySet(&Config{
		Auth:     AuthConfig{Keys: []APIKeyConfig{{Name: "k", Rate: Rate{N: 100, Per: 1e9}}}},
		Policies: []PolicyConfig{{Agents: []string{"*"}, Rate: Rate{N: 60, Per: 60e9}}},
	}, nil)
	if r := ps.state(key("k")).rate; r.N != 60 {
		t.Errorf("rate = %s, want the policy's 60/m", r)
	}
}

// Regression test for issue 9 (bounded memory): the state kept for token
// identities is bounded, whatever number of subjects arrive.
func TestPolicyStatesBounded(t *testing.T) {
	t.Parallel()
	ps := newPolicySet(&Config{Policies: []PolicyConfig{{Agents: []string{"*"}, Rate: Rate{N: 1, Per: 1e9}}}}, nil)
	for i := range maxAgentStates + 500 {
		ps.state(&auth.TokenInfo{UserID: fmt.Sprint("subject-", i)})
	}
	if n := ps.others.len(); n != maxAgentStates {
		t.Errorf("%d states kept, want %d", n, maxAgentStates)
	}
	// The most recent stays; the oldest went.
	if _, ok := ps.others.get(fmt.Sprint("subject-", maxAgentStates+499)); !ok {
		t.Error("the most recent subject was dropped")
	}
	if _, ok := ps.others.get("subject-0"); ok {
		t.Error("the oldest subject was kept")
	}
}

// Regression test for a trial's finding: the token bucket was kept per
// name and scopes, so an agent asking tokens with other scope sets had a
// full bucket with each (8 calls in a minute under 2/m); and a reload of
// any policy refilled every agent's bucket. Now one bucket per identity
// (an API key and a token subject of the same name apart), kept across
// reloads.
func TestAgentBucketPerIdentity(t *testing.T) {
	t.Parallel()
	cfg := &Config{
		Auth:     AuthConfig{Keys: []APIKeyConfig{{Name: "svc-bot", Rate: Rate{N: 2, Per: time.Minute}}}},
		Policies: []PolicyConfig{{Agents: []string{"svc-*"}, Rate: Rate{N: 2, Per: time.Minute}}},
	}
	ps := newPolicySet(cfg, nil)
	now := time.Unix(1_000_000, 0)
	admitted := 0
	for _, scopes := range [][]string{nil, {"read"}, {"write"}, {"read", "write"}, {"admin"}} {
		st := ps.state(&auth.TokenInfo{UserID: "svc-bot", Scopes: scopes})
		for range 2 {
			if _, ok := st.admit(now); ok {
				admitted++
			}
		}
	}
	if admitted != 2 {
		t.Errorf("%d calls admitted across scope sets under 2/m, want 2", admitted)
	}
	// The API key of the same name has its own bucket.
	key := ps.state(&auth.TokenInfo{UserID: "svc-bot", Extra: map[string]any{agentKindKey: agentKindAPIKey}})
	if _, ok := key.admit(now); !ok {
		t.Error("the key svc-bot shares the token subject's bucket")
	}
	// A reload keeps the buckets: the subject stays empty, at the new rate.
	cfg2 := *cfg
	cfg2.Policies = []PolicyConfig{{Agents: []string{"svc-*"}, Rate: Rate{N: 2, Per: time.Minute}, Tools: ToolFilter{Deny: []string{"x__*"}}}}
	ps2 := newPolicySet(&cfg2, ps)
	if _, ok := ps2.state(&auth.TokenInfo{UserID: "svc-bot"}).admit(now); ok {
		t.Error("a reload refilled the subject's bucket")
	}
	if _, ok := ps2.state(&auth.TokenInfo{UserID: "svc-bot"}).admit(now.Add(31 * time.Second)); !ok {
		t.Error("no token 31 s later at 2/m")
	}
}
