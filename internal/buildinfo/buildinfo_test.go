package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestLinkTimeValuesWin(t *testing.T) {
	Version, Commit = "v9.9.9", "0123456789abcdef0123"
	defer func() { Version, Commit = "", "" }()
	got := Get().String("brokerd")
	want := "brokerd v9.9.9 (commit 0123456789ab, " + runtime.Version() + ")"
	if got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}

func TestUnstampedBuildSaysDev(t *testing.T) {
	i := Get()
	if i.Version == "" || i.GoVersion != runtime.Version() {
		t.Fatalf("%+v", i)
	}
	if s := i.String("loadgen"); !strings.HasPrefix(s, "loadgen ") {
		t.Fatal(s)
	}
}
