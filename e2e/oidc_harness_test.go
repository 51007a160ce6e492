package e2e

// A real OAuth 2.0 authorization server for the credential lifecycle tests
// (issue 7): e2e/oidc/provider.mjs runs oidc-provider (pinned in
// e2e/package-lock.json) on the pinned Node 22, and testupstream checks every
// bearer token against it by RFC 7662 introspection, so a revocation at the
// provider is a real revocation.
//
//	test ── startOIDC ─────────▶ node22 e2e/oidc/provider.mjs   (LISTENING issuer)
//	     ── startUpstreamHTTP(p.UpstreamArgs("upstream")...) ─▶ testupstream --introspect …
//	     ── p.ClientCredentials / p.Refresh / p.MintRefreshToken / p.Revoke / p.RevokeClient
//	     ── p.Events ─────────▶ GET /test/events   (every issuance and refusal, in order)
//	     ── seenTokens ───────▶ testupstream GET /debug/tokens (counts per token hash)
//
// Tokens are compared only by tokenHash, as the provider, testupstream and
// its whoami tool report them.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oidcClient is a confidential client registered at the provider.
type oidcClient struct {
	ID     string
	Secret string   // if empty, startOIDC makes a random one
	Grants []string // client_credentials, refresh_token; nil = both, []string{} = none (a resource server)
}

// oidcOptions configures startOIDC; the zero value (or nil) is valid.
type oidcOptions struct {
	// Clients to register. If empty: "gateway" (both grants) and "upstream"
	// (no grants; testupstream introspects with it).
	Clients []oidcClient
	// AccessTTL is the access tokens' lifetime. If zero, 5s. Whole seconds.
	AccessTTL time.Duration
	// RefreshTTL is the refresh tokens' and grants' lifetime. If zero, 24h.
	RefreshTTL time.Duration
	// NoRotate keeps refresh tokens on use. If false, each refresh issues a
	// new refresh token, the old one dies, and replaying it revokes the grant.
	NoRotate bool
	// Scopes clients may request. If empty, "read write".
	Scopes string
	// JWTResources are resource indicators (RFC 8707) whose access tokens are
	// RS256 JWTs with that audience; tokens asked for without a resource stay opaque.
	JWTResources []string
}

// oidcProvider is a running e2e/oidc/provider.mjs.
type oidcProvider struct {
	*proc
	Issuer           string // http://127.0.0.1:PORT
	TokenURL         string
	IntrospectionURL string
	RevocationURL    string
	JWKSURL          string
	clients          map[string]oidcClient
}

var oidcListeningRE = regexp.MustCompile(`^LISTENING (http://\S+)$`)

// startOIDC starts the provider and returns once it is listening. It fails
// the test when e2e/node_modules is missing: `make test` installs it.
func startOIDC(t *testing.T, opts *oidcOptions) *oidcProvider {
	t.Helper()
	if opts == nil {
		opts = &oidcOptions{}
	}
	script := filepath.Join(repoRoot(), "e2e", "oidc", "provider.mjs")
	if _, err := os.Stat(npmPkg("oidc-provider/package.json")); err != nil {
		t.Fatalf("oidc-provider is not installed (%v): run `make e2e-deps` (npm ci in e2e/)", err)
	}
	clients := opts.Clients
	if len(clients) == 0 {
		clients = []oidcClient{{ID: "gateway"}, {ID: "upstream", Grants: []string{}}}
	}
	p := &oidcProvider{clients: map[string]oidcClient{}}
	args := []string{script}
	for _, c := range clients {
		if c.Secret == "" {
			c.Secret = randomSecret(t)
		}
		spec := c.ID + ":" + c.Secret
		if c.Grants != nil {
			spec += ":" + strings.Join(c.Grants, ",")
		}
		args = append(args, "--client", spec)
		p.clients[c.ID] = c
	}
	if opts.AccessTTL != 0 {
		args = append(args, "--access-ttl", strconv.Itoa(int(opts.AccessTTL/time.Second)))
	}
	if opts.RefreshTTL != 0 {
		args = append(args, "--refresh-ttl", strconv.Itoa(int(opts.RefreshTTL/time.Second)))
	}
	if opts.NoRotate {
		args = append(args, "--no-rotate")
	}
	if opts.Scopes != "" {
		args = append(args, "--scopes", opts.Scopes)
	}
	for _, r := range opts.JWTResources {
		args = append(args, "--jwt-resource", r)
	}
	cmd := exec.Command(nodeBin(), args...)
	cmd.Dir = filepath.Join(repoRoot(), "e2e") // node resolves oidc-provider from e2e/node_modules
	p.proc = startCmd(t, context.Background(), "oidc-provider", cmd)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.waitLine(ctx, oidcListeningRE)
	if err != nil {
		t.Fatalf("oidc provider did not start: %v\n%s", err, p.Output())
	}
	p.Issuer = m[1]
	p.TokenURL = p.Issuer + "/token"
	p.IntrospectionURL = p.Issuer + "/token/introspection"
	p.RevocationURL = p.Issuer + "/token/revocation"
	p.JWKSURL = p.Issuer + "/jwks"
	return p
}

func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "s-" + hex.EncodeToString(b)
}

// Client returns a registered client (with its secret), or fails the test.
func (p *oidcProvider) Client(t *testing.T, id string) oidcClient {
	t.Helper()
	c, ok := p.clients[id]
	if !ok {
		t.Fatalf("no oidc client %q", id)
	}
	return c
}

// UpstreamArgs are the testupstream flags that make it check bearer tokens
// (or, on stdio, --env-token's) by introspection as client id.
func (p *oidcProvider) UpstreamArgs(id string) []string {
	c := p.clients[id]
	return []string{"--introspect", p.IntrospectionURL, "--introspect-client", c.ID, "--introspect-secret", c.Secret}
}

// oidcToken is a token endpoint answer.
type oidcToken struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

// oidcError is an OAuth error answer (RFC 6749 §5.2) or any other non-2xx.
type oidcError struct {
	Status      int
	Code        string `json:"error"` // invalid_grant, invalid_client, ...
	Description string `json:"error_description"`
}

func (e *oidcError) Error() string {
	return fmt.Sprintf("oidc provider: HTTP %d: %s: %s", e.Status, e.Code, e.Description)
}

// Token posts form to the token endpoint as client id (client_secret_basic).
// An OAuth error comes back as *oidcError.
func (p *oidcProvider) Token(ctx context.Context, id string, form url.Values) (*oidcToken, error) {
	var tok oidcToken
	if err := p.postForm(ctx, p.TokenURL, id, form, &tok); err != nil {
		return nil, err
	}
	return &tok, nil
}

// ClientCredentials gets an access token with the client-credentials grant.
func (p *oidcProvider) ClientCredentials(ctx context.Context, id string) (*oidcToken, error) {
	return p.Token(ctx, id, url.Values{"grant_type": {"client_credentials"}})
}

// Refresh redeems a refresh token. With rotation (the default) the answer
// carries a new refresh token and refreshToken is dead from then on.
func (p *oidcProvider) Refresh(ctx context.Context, id, refreshToken string) (*oidcToken, error) {
	return p.Token(ctx, id, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

// Introspect asks the introspection endpoint, as client id, whether token is active.
func (p *oidcProvider) Introspect(ctx context.Context, id, token string) (bool, error) {
	var doc struct {
		Active bool `json:"active"`
	}
	err := p.postForm(ctx, p.IntrospectionURL, id, url.Values{"token": {token}}, &doc)
	return doc.Active, err
}

// Revoke revokes token by RFC 7009 as client id, which must be the client the
// token was issued to. Revoking a refresh token (or an access token of a
// refresh grant) revokes its whole grant.
func (p *oidcProvider) Revoke(ctx context.Context, id, token string) error {
	return p.postForm(ctx, p.RevocationURL, id, url.Values{"token": {token}}, nil)
}

// MintRefreshToken mints a grant and a refresh token for client id (scope
// "openid offline_access"), as the authorization code flow would after a
// user consented, without a browser.
func (p *oidcProvider) MintRefreshToken(ctx context.Context, id string) (string, error) {
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := p.testPost(ctx, "/test/refresh-token", map[string]any{"client_id": id}, &out); err != nil {
		return "", err
	}
	return out.RefreshToken, nil
}

// RevokeClient destroys every grant and token of client id: what the
// provider's admin does when a credential leaks. With disable the client can
// no longer authenticate either (token requests get invalid_client) until
// EnableClient. It returns how many grants and tokens were destroyed.
func (p *oidcProvider) RevokeClient(ctx context.Context, id string, disable bool) (int, error) {
	var out struct {
		Revoked int `json:"revoked"`
	}
	err := p.testPost(ctx, "/test/revoke", map[string]any{"client_id": id, "disable": disable}, &out)
	return out.Revoked, err
}

// EnableClient lets a client disabled by RevokeClient authenticate again.
func (p *oidcProvider) EnableClient(ctx context.Context, id string) error {
	return p.testPost(ctx, "/test/enable", map[string]any{"client_id": id}, nil)
}

// oidcEvent is one entry of the provider's event log (GET /test/events).
type oidcEvent struct {
	Seq      int       `json:"seq"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"` // issued, grant_error, minted, revoked, disabled, enabled
	ClientID string    `json:"client_id"`
	// issued and grant_error
	GrantType string `json:"grant_type"`
	// issued (TokenSHA256 also for revoked)
	TokenSHA256        string    `json:"token_sha256"`
	ExpiresIn          int       `json:"expires_in"`
	ExpiresAt          time.Time `json:"expires_at"`
	RefreshTokenSHA256 string    `json:"refresh_token_sha256"` // also minted
	Resource           string    `json:"resource"`
	// grant_error: the OAuth error code, and the reason the provider keeps
	// from the client ("refresh token already used").
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorDetail      string `json:"error_detail"`
	// revoked: access_token, client_credentials or refresh_token
	Kind    string `json:"kind"`
	GrantID string `json:"grant_id"`
}

// Events returns every issuance, refusal and revocation so far, in order.
func (p *oidcProvider) Events(ctx context.Context) ([]oidcEvent, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Issuer+"/test/events", nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Events []oidcEvent `json:"events"`
	}
	if err := doJSON(req, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

func (p *oidcProvider) postForm(ctx context.Context, endpoint, id string, form url.Values, out any) error {
	c, ok := p.clients[id]
	if !ok {
		return fmt.Errorf("no oidc client %q", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	return doJSON(req, out)
}

func (p *oidcProvider) testPost(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Issuer+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return doJSON(req, out)
}

// doJSON sends req and decodes a 2xx JSON answer into out (if not nil); any
// other status is an *oidcError.
func doJSON(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &oidcError{Status: resp.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Code == "" {
			e.Description = string(body)
		}
		return e
	}
	if out == nil || len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: %w: %.200s", req.Method, req.URL, err, body)
	}
	return nil
}

// tokenHash is how tokens are reported everywhere: the first 16 hex digits
// of their SHA-256.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:16]
}

// seenToken is testupstream's record of one token (GET /debug/tokens).
type seenToken struct {
	SHA256        string     `json:"sha256"`
	Accepted      int        `json:"accepted"`
	Rejected      int        `json:"rejected"`
	Errors        int        `json:"errors"`
	FirstSeen     time.Time  `json:"first_seen"`
	LastSeen      time.Time  `json:"last_seen"`
	FirstRejected *time.Time `json:"first_rejected"`
}

// seenRequest is one checked request, in arrival order.
type seenRequest struct {
	Time    time.Time `json:"time"`
	SHA256  string    `json:"sha256"`  // empty when the request carried no token
	Outcome string    `json:"outcome"` // accepted, rejected, missing, error
	Request string    `json:"request"` // "POST /mcp", or on stdio "tools/call echo"
}

// seenTokensDoc is testupstream's GET /debug/tokens (and seen_tokens tool) document.
type seenTokensDoc struct {
	Tokens   []seenToken   `json:"tokens"`
	Requests []seenRequest `json:"requests"`
	Missing  int           `json:"missing"`
}

// Token returns the record of the token with hash, or a zero one.
func (d seenTokensDoc) Token(hash string) seenToken {
	for _, s := range d.Tokens {
		if s.SHA256 == hash {
			return s
		}
	}
	return seenToken{SHA256: hash}
}

// seenTokens reads what an introspecting testupstream (started with
// UpstreamArgs) saw. upstreamURL is its LISTENING URL (…/mcp or …/sse).
func seenTokens(ctx context.Context, upstreamURL string) (seenTokensDoc, error) {
	u, err := url.Parse(upstreamURL)
	if err != nil {
		return seenTokensDoc{}, err
	}
	u.Path = "/debug/tokens"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return seenTokensDoc{}, err
	}
	var doc seenTokensDoc
	err = doJSON(req, &doc)
	return doc, err
}

// bearerTransport adds "Authorization: Bearer <token()>" to every request,
// reading token anew each time so a test can switch tokens mid-session.
type bearerTransport struct {
	token func() string
	base  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token())
	base := b.base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// bearerClient is an *http.Client that sends token() as a bearer token.
func bearerClient(token func() string) *http.Client {
	return &http.Client{Transport: bearerTransport{token: token}}
}

// OAuth2SourceYAML is a flow-style YAML mapping for a credential's
// `source: {oauth2: ...}` (authmap.OAuth2Config) that gets tokens for client
// id here: the client-credentials grant, or the refresh-token grant from
// refreshToken when it is not empty.
func (p *oidcProvider) OAuth2SourceYAML(id, refreshToken string) string {
	c := p.clients[id]
	grant := "client_credentials"
	extra := ""
	if refreshToken != "" {
		grant = "refresh_token"
		extra = ", refresh_token: " + strconv.Quote(refreshToken)
	}
	return fmt.Sprintf("{token_url: %q, client_id: %q, client_secret: %q, grant_type: %s%s}",
		p.TokenURL, c.ID, c.Secret, grant, extra)
}

// refreshCredentialYAML mints a refresh token for client "gateway" and
// returns the config's credentials section: one credential "api" renewed
// with it by the oauth2 source.
func (p *oidcProvider) refreshCredentialYAML(t *testing.T, ctx context.Context) string {
	t.Helper()
	rt, err := p.MintRefreshToken(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	return "credentials:\n  api: {source: {oauth2: " + p.OAuth2SourceYAML("gateway", rt) + "}}\n"
}

// issuedTo returns the "issued" events of client id, in order.
func issuedTo(events []oidcEvent, id string) []oidcEvent {
	var out []oidcEvent
	for _, e := range events {
		if e.Type == "issued" && e.ClientID == id {
			out = append(out, e)
		}
	}
	return out
}

// checkRenewedBeforeExpiry reports every issuance that came only after the
// token before it had expired: a credential renewed on time has each token
// issued while the previous one still lived.
func checkRenewedBeforeExpiry(issued []oidcEvent) error {
	var errs []error
	for i := 1; i < len(issued); i++ {
		prev, cur := issued[i-1], issued[i]
		if !cur.Time.Before(prev.ExpiresAt) {
			errs = append(errs, fmt.Errorf("token %d (%s) was issued at %s, %s after token %d (%s) expired",
				i, cur.TokenSHA256, cur.Time.Format(time.RFC3339Nano), cur.Time.Sub(prev.ExpiresAt), i-1, prev.TokenSHA256))
		}
	}
	return errors.Join(errs...)
}

// RotateKeys rotates the provider's signing keys (issue 9): a new key signs
// from now on and is published first in the JWKS; with keepOld the keys
// before it stay published. It returns the new key's kid.
func (p *oidcProvider) RotateKeys(ctx context.Context, keepOld bool) (string, error) {
	var out struct {
		Kid string `json:"kid"`
	}
	err := p.testPost(ctx, "/test/rotate-keys", map[string]any{"keep_old": keepOld}, &out)
	return out.Kid, err
}

// Sign signs claims as given with the provider's current key (RS256, typ
// at+jwt, its kid; header overrides), or with a key no JWKS has when
// foreignKey: tokens the provider would never issue (expired, for another
// issuer), signed for real.
func (p *oidcProvider) Sign(ctx context.Context, claims, header map[string]any, foreignKey bool) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	body := map[string]any{"claims": claims, "foreign_key": foreignKey}
	if header != nil {
		body["header"] = header
	}
	err := p.testPost(ctx, "/test/sign", body, &out)
	return out.Token, err
}

// AddJWTResource makes tokens asked for resource JWTs with that audience,
// as JWTResources does at start-up (for a URL known only later).
func (p *oidcProvider) AddJWTResource(ctx context.Context, resource string) error {
	return p.testPost(ctx, "/test/jwt-resource", map[string]any{"resource": resource}, nil)
}

// ResourceToken gets a JWT access token for resource with the
// client-credentials grant as client id, with scope (if not empty).
func (p *oidcProvider) ResourceToken(ctx context.Context, id, resource, scope string) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}}
	if scope != "" {
		form.Set("scope", scope)
	}
	tok, err := p.Token(ctx, id, form)
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}
