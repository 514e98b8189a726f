package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// dashboardPath is the Grafana dashboard shipped for these metrics.
const dashboardPath = "../../contrib/grafana/kvmnet-dashboard.json"

type panel struct {
	Type       string
	Title      string
	Datasource *struct{ UID string }
	Targets    []struct{ Expr string }
	Panels     []panel // inside collapsed rows
}

// TestDashboardUsesDefinedMetrics keeps contrib/grafana in step with the
// code: every kvmnet_ metric a panel queries exists, and every metric
// kvmnet defines is on some panel.
func TestDashboardUsesDefinedMetrics(t *testing.T) {
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []panel
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("parsing %s: %v", dashboardPath, err)
	}

	defined := definedMetrics(t)
	nameRe := regexp.MustCompile(`\bkvmnet_[a-z_]+`)
	used := map[string]bool{}
	check := func(where, expr string) {
		for _, n := range nameRe.FindAllString(expr, -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suffix); ok && defined[b] {
					base = b
				}
			}
			if !defined[base] {
				t.Errorf("%s queries %s, which kvmnet does not export", where, n)
			}
			used[base] = true
		}
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the dashboard's datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
					t.Errorf("panel %q: unbalanced brackets in %q", p.Title, tg.Expr)
				}
				check("panel "+p.Title, tg.Expr)
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		check("variable "+v.Name, v.Definition)
	}

	var unused []string
	for n := range defined {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("metrics no panel shows: %v", unused)
	}
}

// definedMetrics gathers every kvmnet_ metric name over the fixtures, with
// the daemon-fed vectors given a series each.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	m := New(fixtureOptions())
	feed(m)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "kvmnet_") {
			out[f.GetName()] = true
		}
	}
	if len(out) < 20 {
		t.Fatalf("gathered only %d kvmnet metrics: %v", len(out), out)
	}
	return out
}
