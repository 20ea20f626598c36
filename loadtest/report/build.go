package report

import "runtime/debug"

// The Makefile links the commit into the binary
// (-ldflags "-X github.com/shardhub/shardhub/loadtest/report.linkedRevision=…"),
// because builds made with -buildvcs=false (a common GOFLAGS setting) or from
// a tree git does not answer for carry no VCS stamp in their build info.
var (
	linkedRevision string // the commit, as `git rev-parse HEAD` printed it
	linkedDirty    string // "true" when the tree had uncommitted changes
)

// Build is what the running binary knows about its own build.
type Build struct {
	// Module is the main module's version ("(devel)" from a checkout).
	Module string
	// Revision is the commit the binary was built from; "" when unknown.
	Revision string
	// Dirty says the tree had uncommitted changes, where that is known.
	Dirty bool
}

// CollectBuild reads the build of the running binary: vcs.revision and
// vcs.modified from its build info, else the revision the Makefile linked in.
// It never asks git at run time, so it is right wherever the binary runs.
func CollectBuild() Build {
	var b Build
	if info, ok := debug.ReadBuildInfo(); ok {
		b.Module = info.Main.Version
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Dirty = s.Value == "true"
			}
		}
	}
	if b.Revision == "" && linkedRevision != "" {
		b.Revision, b.Dirty = linkedRevision, linkedDirty == "true"
	}
	return b
}
