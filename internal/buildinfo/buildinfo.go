// Package buildinfo says which Ringer a binary is: the version and commit
// stamped at link time (scripts/build-images.sh passes -X), else what the
// Go toolchain recorded (a module version from go install, a VCS revision).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time: -ldflags "-X github.com/ringer-dev/ringer/internal/buildinfo.Version=v1.1.0
// -X github.com/ringer-dev/ringer/internal/buildinfo.Commit=<sha>".
var (
	Version = ""
	Commit  = ""
)

// Info is what a binary reports with --version, in its startup log line and
// in the ringer_build_info metric.
type Info struct {
	Version   string // "dev" when nothing better is known
	Commit    string // "" when unknown
	GoVersion string
}

// Get returns the binary's build information.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && i.Commit == "" {
				i.Commit = s.Value
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	return i
}

// String is the --version line of binary: "brokerd v1.1.0 (commit 1a2b3c4d, go1.26.8)".
func (i Info) String(binary string) string {
	commit := i.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s, %s)", binary, i.Version, commit, i.GoVersion)
}
