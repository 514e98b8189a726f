package plan

import (
	"slices"

	"github.com/kvmnet/kvmnet/internal/model"
)

// NeededFeatures lists the kernel features cfg's keys need, for
// ObserveOptions.Features: a host whose file needs none pays for no check.
func NeededFeatures(cfg *model.Config) []Feature {
	var fs []Feature
	add := func(f Feature) {
		if !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	for i := range cfg.Networks {
		for _, f := range networkFeatures(&cfg.Networks[i]) {
			add(f)
		}
	}
	for _, f := range qosFeatures(cfg) {
		add(f)
	}
	return fs
}

// networkFeatures are the features one network's keys need.
func networkFeatures(n *model.Network) []Feature {
	var fs []Feature
	// An interface's vlan: needs vlans: true on its network (the model
	// refuses it otherwise), so the network's key says it all.
	if n.VLANs {
		fs = append(fs, FeatureBridgeVLAN)
	}
	if n.EgressVLAN != 0 {
		fs = append(fs, FeatureVLAN)
	}
	if n.Mode == model.ModeNAT && n.Fastpath {
		fs = append(fs, FeatureFlowtable)
	}
	return fs
}

// require records, when the kernel lacks f, an error at path (the place
// of key in the file) saying what the kernel refused; it reports whether
// the kernel has f. A feature not asked for (ObserveOptions.Features)
// counts as present: NeededFeatures must name it.
func (b *builder) require(f Feature, path, key string) bool {
	why, missing := b.obs.Missing[f]
	if !missing {
		return true
	}
	b.errs = append(b.errs, b.cfg.Errorf(path, "%s needs %s, which this kernel lacks (%s); remove %s, or run a kernel that has it",
		key, f, why, key))
	return false
}
