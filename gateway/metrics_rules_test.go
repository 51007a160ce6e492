package gateway

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// rulesFile is the rule file format of Prometheus (rule_files), the fields
// an alerting rule may have; decoding is strict, so a misspelt key fails.
type rulesFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// Regression test for issue 10 (alerting rules): configs/prometheus-rules.yaml
// is a valid Prometheus rule file, each expression parses as PromQL and
// selects only series and labels the gateway exposes, each annotation is a
// valid template using only labels the alert carries, and the alerts the
// issue asks for are there.
func TestPrometheusRulesFile(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	raw, err := os.ReadFile(filepath.Join("..", "configs", "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("prometheus-rules.yaml: %v", err)
	}

	// The families and labels a gateway exposes, every series driven once.
	g, cs, _ := metricsGateway(t, ctx, "rules-token-0123456789")
	callOK(t, ctx, cs, "api__echo")
	driveHooks(g)
	families := map[string][]string{} // name -> label names
	for name, mf := range gather(t, g) {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(families[name], l.GetName()) {
					families[name] = append(families[name], l.GetName())
				}
			}
		}
		families[name] = append(families[name], targetLabels...)
		if mf.GetType().String() == "HISTOGRAM" {
			families[name+"_bucket"] = append(slices.Clone(families[name]), "le")
			families[name+"_sum"], families[name+"_count"] = families[name], families[name]
		}
	}

	p := parser.NewParser(parser.Options{})
	var alerts []string
	groups := map[string]bool{}
	for _, grp := range rf.Groups {
		if grp.Name == "" || groups[grp.Name] {
			t.Errorf("group %q: a group needs a unique name", grp.Name)
		}
		groups[grp.Name] = true
		if len(grp.Rules) == 0 {
			t.Errorf("group %q has no rules", grp.Name)
		}
		for i, r := range grp.Rules {
			where := grp.Name + "/" + r.Alert
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s (rule %d): want an alerting rule (alert, not record)", where, i)
				continue
			}
			if !model.LabelName(r.Alert).IsValidLegacy() || slices.Contains(alerts, r.Alert) {
				t.Errorf("%s: the alert name must be a unique valid metric name", where)
			}
			alerts = append(alerts, r.Alert)
			for _, d := range []string{r.For, r.KeepFiringFor, grp.Interval} {
				if _, err := model.ParseDuration(d); d != "" && err != nil {
					t.Errorf("%s: duration %q: %v", where, d, err)
				}
			}
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("%s: severity %q, want page or ticket", where, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a summary and a description", where)
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: expr %q: %v", where, r.Expr, err)
				continue
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				labels, known := families[vs.Name]
				if !known {
					t.Errorf("%s: selects %q, which the gateway does not expose", where, vs.Name)
					return nil
				}
				for _, m := range vs.LabelMatchers {
					if m.Name != model.MetricNameLabel && !slices.Contains(labels, m.Name) {
						t.Errorf("%s: %s has no label %q", where, vs.Name, m.Name)
					}
				}
				return nil
			})
			out := outputLabels(t, expr, families)
			for _, text := range r.Annotations {
				checkTemplate(t, where, text, out)
			}
		}
	}
	for _, want := range []string{"CredgateCredentialRevoked", "CredgateCredentialInvalid", "CredgateCredentialMissing",
		"CredgateCredentialExpiring", "CredgateBreakerOpen", "CredgateRouteNoHealthyTarget"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

// outputLabels returns the labels the series an expression returns carry.
func outputLabels(t *testing.T, e parser.Expr, families map[string][]string) []string {
	switch e := e.(type) {
	case *parser.VectorSelector:
		return families[e.Name]
	case *parser.MatrixSelector:
		return outputLabels(t, e.VectorSelector, families)
	case *parser.ParenExpr:
		return outputLabels(t, e.Expr, families)
	case *parser.BinaryExpr:
		if e.LHS.Type() == parser.ValueTypeVector {
			return outputLabels(t, e.LHS, families)
		}
		return outputLabels(t, e.RHS, families)
	case *parser.Call:
		for _, a := range e.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return outputLabels(t, a, families)
			}
		}
	case *parser.AggregateExpr:
		if !e.Without {
			return e.Grouping
		}
		return slices.DeleteFunc(slices.Clone(outputLabels(t, e.Expr, families)), func(l string) bool { return slices.Contains(e.Grouping, l) })
	}
	t.Errorf("outputLabels: %T (%s) not handled", e, e)
	return nil
}

// labelRef is a label read in an annotation template.
var labelRef = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// checkTemplate parses an annotation as Prometheus does (text/template
// with its variables and functions), and checks that the labels it reads
// are on the alert.
func checkTemplate(t *testing.T, where, text string, labels []string) {
	t.Helper()
	funcs := template.FuncMap{}
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"query", "first", "label", "value", "sortByLabel", "title", "toUpper", "toLower", "match", "reReplaceAll",
		"args", "safeHtml", "stripPort", "stripDomain", "parseDuration", "externalURL", "pathPrefix", "tableLink", "graphLink"} {
		funcs[f] = func(...any) any { return nil }
	}
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	if _, err := template.New(where).Funcs(funcs).Parse(defs + text); err != nil {
		t.Errorf("%s: annotation %q: %v", where, text, err)
	}
	for _, m := range labelRef.FindAllStringSubmatch(text, -1) {
		if !slices.Contains(labels, m[1]) {
			t.Errorf("%s: an annotation reads $labels.%s, which the alert does not carry (it has %s)", where, m[1], strings.Join(labels, ", "))
		}
	}
}
