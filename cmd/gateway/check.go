package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/gateway"
)

// preflightTimeout bounds the start-up pre-flight and `gateway check`.
const preflightTimeout = 30 * time.Second

// preflight resolves every credential before the gateway serves (issue 7)
// and applies lifecycle.startup.fail_on: it reports false, after logging
// each bad credential with its status and why, when the gateway must not
// start; with fail_on: never, bad credentials are logged and it starts
// degraded.
func preflight(ctx context.Context, g *gateway.Server, cfg *gateway.Config, log *zerolog.Logger) bool {
	if len(cfg.Credentials) == 0 {
		return true
	}
	lctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	_ = g.LoadCredentials(lctx) // the statuses tell; Problems decides
	failOn := cfg.Lifecycle.WithDefaults().Startup.FailOn
	problems := g.CredentialProblems()
	// A source that failed in a way that may pass (a token endpoint or a
	// store not answering) is asked again within the bound, with backoff:
	// one dropped connection refused the start, and a brief outage of an
	// identity provider during a rollout would crash-loop every new pod
	// (found trying the gateway from outside).
	for wait := time.Second; problems != nil; wait = min(2*wait, 8*time.Second) {
		retry := transientlyFailed(g.Credentials())
		if len(retry) == 0 || len(retry) < len(lines(problems)) {
			break // nothing that may pass, or another problem refuses the start anyway
		}
		log.Warn().Strs("credentials", credentialNames(retry)).Dur("retry_in_ms", wait).Msg("pre-flight: a credential's source did not answer; asking again")
		t := time.NewTimer(wait)
		select {
		case <-lctx.Done():
			t.Stop()
		case <-t.C:
		}
		if lctx.Err() != nil {
			break
		}
		for _, c := range retry {
			_, _ = c.Renew(lctx, authmap.TriggerStartup)
		}
		problems = g.CredentialProblems()
	}
	if problems == nil {
		// Under fail_on: never, Problems refuses nothing: report what is bad anyway.
		problems = g.Credentials().Problems(authmap.StartupConfig{FailOn: authmap.FailOnExpiring})
		for _, line := range lines(problems) {
			log.Warn().Str("fail_on", string(failOn)).Msg("starting degraded: " + line)
		}
		return true
	}
	for _, line := range lines(problems) {
		log.Error().Str("fail_on", string(failOn)).Msg(line)
	}
	log.Error().Str("fail_on", string(failOn)).Msg("refusing to start: bad credentials (lifecycle.startup.fail_on; `never` starts degraded)")
	return false
}

// transientlyFailed returns the credentials of set without a usable value
// whose source last failed as an unreachable service does (not a
// rejection, not a missing value).
func transientlyFailed(set *authmap.Set) []*authmap.Credential {
	var out []*authmap.Credential
	for _, name := range set.Names() {
		c := set.Get(name)
		if c == nil || c.Value() != "" {
			continue
		}
		if le := c.Snapshot(false).LastError; le != nil && le.Type == authmap.TypeUpstreamUnavailable {
			out = append(out, c)
		}
	}
	return out
}

func credentialNames(cs []*authmap.Credential) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name()
	}
	return out
}

func lines(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkReport is `gateway check --json`.
type checkReport struct {
	OK          bool              `json:"ok"`
	Credentials []checkCredential `json:"credentials"`
}

type checkCredential struct {
	Name string `json:"name"`
	authmap.Snapshot
	// Fails says why the credential fails the check; empty when it passes.
	Fails string `json:"fails,omitempty"`
	// Unverified is set when no probe is configured: the value was read,
	// but nothing asked the provider whether it accepts it.
	Unverified bool `json:"unverified,omitempty"`
}

// check runs the pre-flight once and reports every credential: the command
// a deploy pipeline or a cron runs. It exits 1 when any credential is
// missing, invalid, revoked, expired or expiring (within expiry_warning).
func check(path string, asJSON bool, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	nop := zerolog.Nop()
	g, err := gateway.New(cfg, &gateway.Options{Version: buildVersion(), Logger: &nop})
	if err != nil {
		fmt.Fprintln(stderr, "gateway check:", err)
		return 1
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), preflightTimeout)
	defer cancel()
	_ = g.LoadCredentials(ctx)
	h := g.Health()
	rep := checkReport{OK: true, Credentials: []checkCredential{}}
	for _, name := range g.Credentials().Names() {
		s, ok := h.Credentials[name]
		if !ok {
			continue
		}
		pc := cfg.Credentials[name].Probe
		cc := checkCredential{Name: name, Snapshot: s, Unverified: pc.HTTP == nil && pc.Tool == ""}
		switch s.Status {
		case authmap.StatusMissing, authmap.StatusInvalid, authmap.StatusRevoked, authmap.StatusExpired,
			authmap.StatusExpiring, authmap.StatusUnknown:
			cc.Fails = s.Status.String()
			if s.LastError != nil && s.LastError.Detail != "" {
				cc.Fails += ": " + s.LastError.Detail
			}
			rep.OK = false
		}
		rep.Credentials = append(rep.Credentials, cc)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printCheck(stdout, rep)
	}
	if !rep.OK {
		return 1
	}
	return 0
}

func printCheck(w io.Writer, rep checkReport) {
	if len(rep.Credentials) == 0 {
		fmt.Fprintln(w, "no credentials configured")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CREDENTIAL\tSTATUS\tTTL\tSOURCE\tREADINESS")
	for _, c := range rep.Credentials {
		ttl := "unknown"
		if c.TTLSeconds != nil {
			d := time.Duration(*c.TTLSeconds) * time.Second
			ttl = shortDuration(d)
			if d < 0 {
				ttl = "expired " + ttl + " ago"
			}
		}
		status := c.Status.String()
		if c.Unverified && c.Fails == "" {
			status += " (unverified)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/100\n", c.Name, status, ttl, c.Source, c.Readiness.Score)
	}
	_ = tw.Flush()
	for _, c := range rep.Credentials {
		fmt.Fprintf(w, "\n%s: %s, readiness %d/100\n", c.Name, c.Status, c.Readiness.Score)
		if c.Fails != "" {
			fmt.Fprintf(w, "  FAILS: %s\n", printable(c.Fails))
		} else if c.LastError != nil && c.LastError.Detail != "" {
			// Usable, but something was inconclusive (a probe that could not run).
			fmt.Fprintf(w, "  NOTE: %s\n", printable(c.LastError.Detail))
		}
		for _, p := range c.Readiness.Parts {
			if p.OK {
				fmt.Fprintf(w, "  [x] %s\n", p.Name)
			} else {
				fmt.Fprintf(w, "  [ ] %s: %s\n", p.Name, p.Fix)
			}
		}
	}
	var unverified []string
	for _, c := range rep.Credentials {
		if c.Unverified && c.Fails == "" {
			unverified = append(unverified, c.Name)
		}
	}
	if rep.OK && len(unverified) > 0 {
		fmt.Fprintf(w, "\nok: every credential has a value; not checked with its provider (no probe configured: credentials.<name>.probe): %s\n", strings.Join(unverified, ", "))
	} else if rep.OK {
		fmt.Fprintln(w, "\nok: every credential is usable")
	} else {
		fmt.Fprintln(w, "\nFAILED: some credentials are not usable (see above)")
	}
}
