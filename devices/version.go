package devices

import "runtime/debug"

// BuildVersion describes the binary: the module version it was built at
// ("(devel)" for a build from a working tree) and, when the build knows it,
// the commit, with "+dirty" when the tree had changes. Both binaries print
// it for --version.
func BuildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev[:min(12, len(rev))] + dirty
	}
	return v + " " + info.GoVersion
}
