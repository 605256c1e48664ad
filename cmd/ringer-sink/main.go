// Command ringer-sink is a development HTTP receiver for what Ringer's
// gateways deliver: it checks each request's Ringer-Signature (when a key is
// set), prints one JSON line per delivery on stdout, and answers 204 — or
// 401 to a bad signature. Point ringer-push at it to watch push requests
// arrive (the docker-compose cluster does).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ringer-dev/ringer/internal/buildinfo"
	"github.com/ringer-dev/ringer/internal/signature"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ringer-sink:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ringer-sink", flag.ContinueOnError)
	version := fs.Bool("version", false, "print the version and exit")
	listen := fs.String("listen", ":8080", "address to listen on")
	secretEnv := fs.String("secret-env", "RINGER_PUSH_SECRET", "environment variable holding the HMAC key (none: signatures are not checked)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		_, err := fmt.Fprintln(out, buildinfo.Get().String("ringer-sink"))
		return err
	}
	srv := &http.Server{Addr: *listen, Handler: handler([]byte(os.Getenv(*secretEnv)), out), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "ringer-sink: listening on %s\n", *listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handler logs each delivery as {"at", "path", "signed", "body"}.
func handler(secret []byte, out io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a body", http.StatusBadRequest)
			return
		}
		body, err := signature.ReadVerified(r, secret, 1<<20, time.Now(), 5*time.Minute)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		signed := len(secret) > 0
		line := struct {
			At     time.Time       `json:"at"`
			Path   string          `json:"path"`
			Signed bool            `json:"signed"`
			Body   json.RawMessage `json:"body"`
		}{time.Now().UTC(), r.URL.Path, signed, body}
		if !json.Valid(body) {
			line.Body, _ = json.Marshal(string(body))
		}
		mu.Lock()
		_ = json.NewEncoder(out).Encode(line)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
}
