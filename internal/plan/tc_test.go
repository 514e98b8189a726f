package plan_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvmnet/kvmnet/internal/kernel/fake"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/plan"
)

// What this CI kernel says when asked for what it lacks.
const (
	whyFqCodel = "an fq_codel qdisc: no such file or directory"
	whyMirred  = "a matchall filter with a mirred redirect: no such file or directory"
)

// lacksTc is the fake host with this CI kernel's tc: htb, but no
// fq_codel and no mirred.
func lacksTc() *fake.Kernel {
	k := host()
	k.Lacks = map[plan.Feature]string{plan.FeatureFqCodel: whyFqCodel, plan.FeatureMirred: whyMirred}
	return k
}

// buildOn plans doc against k, asking for the features doc needs.
func buildOn(t *testing.T, k *fake.Kernel, doc string) (*plan.Plan, error) {
	t.Helper()
	cfg, err := model.ParseStored("host.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	obs, err := k.Observe(context.Background(), plan.ObserveOptions{Features: plan.NeededFeatures(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	return plan.Build(cfg, obs, plan.Options{})
}

// TestQoSLeafWithoutFqCodel: on a kernel without fq_codel the class
// keeps the default leaf, and the plan says why.
func TestQoSLeafWithoutFqCodel(t *testing.T) {
	k := lacksTc()
	p, err := buildOn(t, k, file([]string{net(dev, "")}, net(web1, ", qos: {ingress: 50mbit}")))
	if err != nil {
		t.Fatal(err)
	}
	var set []plan.SetHTB
	for _, a := range p.Actions {
		if s, ok := a.(plan.SetHTB); ok {
			set = append(set, s)
		}
	}
	want := []plan.SetHTB{{Name: "web1-0", HTB: plan.HTB{Rate: 50e6, Ceil: 50e6, Burst: 62500}}}
	if diff := cmp.Diff(want, set); diff != "" {
		t.Errorf("htb steps (-want +got):\n%s", diff)
	}
	note := "# tap web1-0: htb class with the kernel's default pfifo leaf: this kernel lacks fq_codel (" + whyFqCodel + ")\n"
	if !strings.Contains(p.String(), note) {
		t.Errorf("plan does not say which leaf:\n%s", p)
	}
	for _, a := range p.Actions {
		if _, err := a.Do(context.Background(), k, plan.Hooks{}); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	if again, err := buildOn(t, k, file([]string{net(dev, "")}, net(web1, ", qos: {ingress: 50mbit}"))); err != nil || !again.Empty() {
		t.Errorf("planned again: %v\n%s", err, again)
	}
}

// TestQoSEgressRefused: what a guest sends cannot be shaped without
// mirred, and policing it is not built: both are refused at their key,
// the first with the kernel's reason, never ignored.
func TestQoSEgressRefused(t *testing.T) {
	for _, tc := range []struct{ name, qos, want string }{
		{"shape", "{egress: 10mbit, ingress: 50mbit}",
			`host.yaml:5:106: vms[0].interfaces[0].qos.egress: qos egress needs the tc mirred action, which this kernel lacks (` + whyMirred + `); remove qos egress, or run a kernel that has it`},
		{"police", "{egress: {rate: 10mbit, mode: police}}",
			`host.yaml:5:127: vms[0].interfaces[0].qos.egress.mode: vm "web1": qos egress mode police (an nftables rate limit) is not built yet; remove egress:, or shape traffic to the guest with ingress:`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := buildOn(t, lacksTc(), file([]string{net(dev, "")}, net(web1, ", qos: "+tc.qos)))
			if err == nil {
				t.Fatalf("planned:\n%s", p)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
		})
	}
	// A kernel with mirred: still refused, saying it is not built.
	p, err := buildOn(t, host(), file([]string{net(dev, "")}, net(web1, ", qos: {egress: 10mbit}")))
	if err == nil || !strings.Contains(err.Error(), "qos egress (shaping what the guest sends, with an ifb and tc mirred) is not built yet") {
		t.Errorf("egress on a kernel with mirred: %v\n%s", err, p)
	}
}

// TestQoSDriftRepaired: a qdisc deleted or changed by hand is planned
// back; someone else's root qdisc on a port without qos is left alone.
func TestQoSDriftRepaired(t *testing.T) {
	doc := file([]string{net(dev, "")}, net(web1, ", qos: {ingress: 50mbit}"))
	k := host()
	p, err := buildOn(t, k, doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range p.Actions {
		if _, err := a.Do(context.Background(), k, plan.Hooks{}); err != nil {
			t.Fatal(err)
		}
	}
	want := plan.HTB{Rate: 50e6, Ceil: 50e6, Burst: 62500, Leaf: "fq_codel"}
	for _, tc := range []struct {
		name  string
		drift func(l *plan.Link)
		prev  *plan.HTB
	}{
		{"deleted", func(l *plan.Link) { l.HTB = nil }, nil},
		{"rate changed", func(l *plan.Link) { l.HTB = &plan.HTB{Rate: 1e6, Ceil: 1e6, Burst: 62500, Leaf: "fq_codel"} },
			&plan.HTB{Rate: 1e6, Ceil: 1e6, Burst: 62500, Leaf: "fq_codel"}},
		{"leaf lost", func(l *plan.Link) { l.HTB = &plan.HTB{Rate: 50e6, Ceil: 50e6, Burst: 62500} },
			&plan.HTB{Rate: 50e6, Ceil: 50e6, Burst: 62500}},
	} {
		k.Edit(func(o *plan.Observed) {
			l := o.Links["web1-0"]
			tc.drift(&l)
			o.Links["web1-0"] = l
		})
		p, err := buildOn(t, k, doc)
		if err != nil {
			t.Fatal(err)
		}
		wantSteps := []plan.Action{plan.SetHTB{Name: "web1-0", HTB: want, Prev: tc.prev}}
		if diff := cmp.Diff(wantSteps, p.Actions); diff != "" {
			t.Errorf("%s: (-want +got):\n%s", tc.name, diff)
		}
		for _, a := range p.Actions {
			if _, err := a.Do(context.Background(), k, plan.Hooks{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A burst read back a rounding away is the same burst.
	k.Edit(func(o *plan.Observed) {
		l := o.Links["web1-0"]
		l.HTB = &plan.HTB{Rate: 50e6, Ceil: 50e6, Burst: 62499, Leaf: "fq_codel"}
		o.Links["web1-0"] = l
	})
	if p, err := buildOn(t, k, doc); err != nil || !p.Empty() {
		t.Errorf("a burst 1 byte off: %v\n%s", err, p)
	}
}
