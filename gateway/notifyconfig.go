package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/credgate/credgate/authmap"
)

// Config of the alert notifiers (issue 10): the notify list. Delivery is in
// notify.go.

// Notifier formats.
const (
	FormatPagerDuty = "pagerduty" // PagerDuty Events API v2
	FormatSlack     = "slack"     // a Slack incoming webhook
	FormatGeneric   = "generic"   // JSON, signed with X-Credgate-Signature
)

// DefaultPagerDutyURL is where a pagerduty notifier sends when it sets no url.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// DefaultNotifyMinInterval is the least time between two triggers of the
// same alert on one notifier, when min_interval is zero.
const DefaultNotifyMinInterval = 10 * time.Minute

// Alert conditions: what a notifier's on list may name.
const (
	// CondCredentialRevoked: a credential is revoked (a refresh answered
	// invalid_grant, or a call answered credential_revoked).
	CondCredentialRevoked = "credential_revoked"
	// CondCredentialInvalid: the provider rejected a credential's value or
	// the token endpoint its client.
	CondCredentialInvalid = "credential_invalid"
	// CondCredentialMissing: a credential has no value.
	CondCredentialMissing = "credential_missing"
	// CondCredentialExpiredUnrenewable: a credential expired and the gateway
	// cannot renew it: one that is not renewable at once, a renewable one
	// still expired a minute on (its renewal failed).
	CondCredentialExpiredUnrenewable = "credential_expired_unrenewable"
	// CondCredentialExpiring: a credential the gateway cannot renew is
	// within lifecycle.expiry_warning of its expiry, or a renewable one's
	// renewal keeps failing past its refresh point.
	CondCredentialExpiring = "credential_expiring"
	// CondBreakerOpenLong: an upstream is down and its circuit breaker has
	// not closed for 5 minutes.
	CondBreakerOpenLong = "breaker_open_long"
	// CondRouteNoTarget: a route has no healthy target (published by the
	// route table).
	CondRouteNoTarget = "route_no_target"
)

// conditions lists every condition; defaultConditions are those a notifier
// without an on list watches: the credential problems that need a person.
var (
	conditions = []string{CondCredentialRevoked, CondCredentialInvalid, CondCredentialMissing,
		CondCredentialExpiredUnrenewable, CondCredentialExpiring, CondBreakerOpenLong, CondRouteNoTarget}
	defaultConditions = conditions[:5]
)

// NotifyConfig is one entry of the notify list: where alerts go, in which
// format, and which conditions it is told about.
type NotifyConfig struct {
	// Name names the notifier in logs, /health and metrics
	// ([a-z0-9][a-z0-9_-]*, unique).
	Name string `koanf:"name"`
	// Format is pagerduty, slack or generic.
	Format string `koanf:"format"`
	// URL is where notifications are POSTed. For pagerduty, if empty,
	// defaults to https://events.pagerduty.com/v2/enqueue. For slack it is
	// the incoming webhook's URL, a secret: it is redacted everywhere and
	// never shown in errors.
	URL string `koanf:"url"`
	// RoutingKey is the PagerDuty integration key (pagerduty only; a secret).
	RoutingKey string `koanf:"routing_key"`
	// Secret keys the HMAC-SHA256 signature of a generic notification's
	// body, sent as X-Credgate-Signature: sha256=<hex> (generic only; a
	// secret). If empty, generic notifications are not signed.
	Secret string `koanf:"secret"`
	// On lists the conditions notified. If empty, the credential
	// conditions: credential_revoked, credential_invalid, credential_missing,
	// credential_expired_unrenewable, credential_expiring.
	On []string `koanf:"on"`
	// MinInterval is the least time between two triggers of one alert (one
	// credential and condition) on this notifier: a condition that clears
	// and comes back sooner is triggered again only once it has passed, if
	// it still holds. If zero, defaults to 10m.
	MinInterval time.Duration `koanf:"min_interval"`
}

// conditions returns the conditions the notifier watches.
func (n *NotifyConfig) conditions() []string {
	if len(n.On) == 0 {
		return defaultConditions
	}
	return n.On
}

func (n *NotifyConfig) minInterval() time.Duration {
	if n.MinInterval <= 0 {
		return DefaultNotifyMinInterval
	}
	return n.MinInterval
}

func (n *NotifyConfig) url() string {
	if n.URL == "" && n.Format == FormatPagerDuty {
		return DefaultPagerDutyURL
	}
	return n.URL
}

// validateNotify checks the notify list, naming each problem's key.
func (c *Config) validateNotify() error {
	var errs []error
	seen := map[string]int{}
	for i := range c.Notify {
		n := &c.Notify[i]
		key := fmt.Sprintf("notify[%d]", i)
		bad := func(k, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s%s: %s", key, k, fmt.Sprintf(format, args...)))
		}
		switch {
		case n.Name == "":
			bad(".name", "missing: every notifier needs a name (it names it in logs, /health and metrics)")
		case !upstreamNameRE.MatchString(n.Name):
			bad(".name", "invalid name %q: names match [a-z0-9][a-z0-9_-]*", n.Name)
		default:
			if j, dup := seen[n.Name]; dup {
				bad(".name", "%q is also the name of notify[%d]; names must be unique", n.Name, j)
			}
			seen[n.Name] = i
		}
		switch n.Format {
		case FormatPagerDuty, FormatSlack, FormatGeneric:
		case "":
			bad(".format", "missing: want pagerduty, slack or generic")
		default:
			msg := fmt.Sprintf("unknown format %s", c.shown(key+".format", n.Format))
			if s := suggest(n.Format, []string{FormatPagerDuty, FormatSlack, FormatGeneric}); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			bad(".format", "%s: want pagerduty, slack or generic", msg)
		}
		switch u := n.url(); {
		case u == "" && (n.Format == FormatSlack || n.Format == FormatGeneric):
			bad(".url", "missing: a %s notifier needs a url", n.Format)
		case u != "":
			shown := c.shownURL(key+".url", u)
			if n.Format == FormatSlack {
				shown = "(not shown: a Slack webhook URL is a secret)"
			}
			if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				bad(".url", "invalid url %s: want http(s)://host/path", shown)
			} else if why := authmap.BadPort(p); why != "" {
				bad(".url", "%s in url %s", why, shown)
			}
		}
		if n.Format == FormatPagerDuty && n.RoutingKey == "" {
			bad(".routing_key", "missing: a pagerduty notifier needs the integration's routing key (use ${ENV} to keep it out of the file)")
		}
		if n.RoutingKey != "" && n.Format != FormatPagerDuty && n.Format != "" {
			bad(".routing_key", "applies to format pagerduty only (format is %s)", n.Format)
		}
		if n.Secret != "" && n.Format != FormatGeneric && n.Format != "" {
			bad(".secret", "applies to format generic only (format is %s)", n.Format)
		}
		for j, cond := range n.On {
			if slices.Contains(conditions, cond) {
				continue
			}
			msg := fmt.Sprintf("unknown condition %q", cond)
			if s := suggest(cond, conditions); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			bad(fmt.Sprintf(".on[%d]", j), "%s: want one of %s", msg, strings.Join(conditions, ", "))
		}
		if n.MinInterval < 0 {
			bad(".min_interval", "negative duration %s", n.MinInterval)
		}
	}
	return errors.Join(errs...)
}

// notifySecrets are the notifiers' secrets, for the redactor: routing keys,
// generic secrets, Slack webhook URLs (whole, and their last path segment,
// the token part) and any URL's password or secret query parameters.
func notifySecrets(c *Config) []string {
	var out []string
	for _, n := range c.Notify {
		for _, s := range []string{n.RoutingKey, n.Secret} {
			if strings.TrimSpace(s) != "" {
				out = append(out, s)
			}
		}
		if n.Format == FormatSlack && n.URL != "" {
			out = append(out, n.URL)
			if p, err := url.Parse(n.URL); err == nil && len(path.Base(p.Path)) >= minSecretWarn {
				out = append(out, path.Base(p.Path))
			}
		}
		out = append(out, secretsOf("url", n.URL, 0)...)
	}
	return out
}
