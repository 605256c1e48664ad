package embedded

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPortsTakenNamesTheHeldPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().(*net.TCPAddr).Port
	free, err := FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	got := portsTaken(Config{Host: "127.0.0.1", Port: free, Cluster: &ClusterConfig{Port: held}})
	if !strings.Contains(got, "route port "+strconv.Itoa(held)) || strings.Contains(got, "client port") {
		t.Fatalf("portsTaken = %q, want the route port %d only", got, held)
	}
	if got := portsTaken(Config{Host: "127.0.0.1", Port: -1}); got != "" {
		t.Fatalf("random ports reported taken: %q", got)
	}
}

// A store directory that cannot be written is reported at once, with the
// reason, instead of a server that is "not ready after 15s".
func TestUnwritableStoreIsReportedAtOnce(t *testing.T) {
	start := time.Now()
	_, err := Start(Config{Port: -1, StoreDir: "/proc/nope"})
	if err == nil || !strings.Contains(err.Error(), "store directory") {
		t.Fatalf("Start with /proc/nope: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %s to say so", took)
	}
}
