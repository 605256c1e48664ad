// Command ringer-admin backs up and restores Ringer's JetStream state (the
// bucket and the timer stream, with their consumers) with JetStream's own
// snapshots: `ringer-admin backup --nats URL --dir DIR` while brokers run,
// `ringer-admin restore --nats URL --dir DIR` into a deployment where
// Ringer's streams do not exist yet, before its brokers start
// (docs/operations.md, "Backup and restore").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/buildinfo"
)

func main() {
	err := run(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringer-admin:", err)
		os.Exit(1)
	}
}

const usage = "usage: ringer-admin backup|restore --nats URL --dir DIR [--tls-ca FILE] [--timeout 5m]"

func run(args []string, out io.Writer) error {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		_, err := fmt.Fprintln(out, buildinfo.Get().String("ringer-admin"))
		return err
	}
	if len(args) == 0 || (args[0] != "backup" && args[0] != "restore") {
		return errors.New(usage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("ringer-admin "+verb, flag.ContinueOnError)
	url := fs.String("nats", nats.DefaultURL, "NATS URL(s) of the broker account (the one with JetStream)")
	dir := fs.String("dir", "", "backup directory (created by backup, read by restore)")
	ca := fs.String("tls-ca", "", "PEM file of the CA of the NATS servers' certificates")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return errors.New(usage)
	}
	opts := []nats.Option{nats.Name("ringer-admin " + verb)}
	if *ca != "" {
		opts = append(opts, nats.RootCAs(*ca))
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	var streams []string
	if verb == "backup" {
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		streams, err = store.Backup(ctx, nc, *dir)
	} else {
		streams, err = store.Restore(ctx, nc, *dir)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s of %v: done in %s (%s)\n", verb, streams, time.Since(start).Round(time.Millisecond), *dir)
	return err
}
