package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/subjects"
)

// Streams are Ringer's JetStream streams in a deployment of n partitions, in
// the order they are backed up and restored: each partition's bucket
// (invitations, lines, sessions, push targets, and in partition 0 the
// partition count) and timers, then the users' histories. (Push requests are
// not: they are useless an hour later.)
func Streams(n int) []string {
	var out []string
	for p := range subjects.Partition(max(n, 1)) {
		out = append(out, p.BucketStream(), p.TimerStream())
	}
	return append(out, subjects.HistoryStream)
}

// snapshotChunk is the chunk size asked of the server and used to restore.
const snapshotChunk = 128 << 10

// backupMeta is what a backup keeps of a stream beside its data: what the
// server's restore request needs.
type backupMeta struct {
	Config json.RawMessage `json:"config"`
	State  json.RawMessage `json:"state"`
}

// apiError is the error member of a JetStream API response.
type apiError struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func (a apiError) err(what string) error {
	if a.Error == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %s (%d)", what, a.Error.Description, a.Error.ErrCode)
}

// Backup writes a snapshot of each of Ringer's streams, with its consumers,
// into dir (<stream>.json and <stream>.snap): JetStream's own snapshot
// (the API behind `nats stream backup`), consistent per stream and taken
// while brokers keep serving. dir must exist. It returns the streams saved.
func Backup(ctx context.Context, nc *nats.Conn, dir string) ([]string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	n, err := Layout(ctx, js)
	if err != nil {
		return nil, err
	}
	streams := Streams(n)
	for _, s := range streams {
		if err := backupStream(ctx, nc, s, dir); err != nil {
			return nil, err
		}
	}
	return streams, nil
}

func backupStream(ctx context.Context, nc *nats.Conn, stream, dir string) error {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(map[string]any{"deliver_subject": inbox, "chunk_size": snapshotChunk})
	resp, err := nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.SNAPSHOT."+stream, req)
	if err != nil {
		return fmt.Errorf("store: snapshot %s: %w", stream, err)
	}
	var meta struct {
		apiError
		backupMeta
	}
	if err := json.Unmarshal(resp.Data, &meta); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", stream, err)
	}
	if err := meta.err("snapshot " + stream); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, stream+".snap"))
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return fmt.Errorf("store: snapshot %s: %w", stream, err)
		}
		if len(m.Data) == 0 { // the end: no status or 204, else an error status
			if status := m.Header.Get("Status"); status != "" && status != "204" {
				return fmt.Errorf("store: snapshot %s: status %s %s", stream, status, m.Header.Get("Description"))
			}
			break
		}
		if _, err := w.Write(m.Data); err != nil {
			return err
		}
		if m.Reply != "" { // flow control: the server sends ahead a window of chunks
			if err := nc.Publish(m.Reply, nil); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	b, _ := json.Marshal(meta.backupMeta)
	return os.WriteFile(filepath.Join(dir, stream+".json"), b, 0o600)
}

// Restore recreates Ringer's streams, with their consumers, from a Backup
// in dir, on a deployment where they do not exist yet (restore before
// starting brokers). A stream that exists is an error: delete it first.
// Partition 0's bucket comes first: it says how many partitions follow. It
// returns the streams restored.
func Restore(ctx context.Context, nc *nats.Conn, dir string) ([]string, error) {
	first := subjects.Partition(0).BucketStream()
	if err := restoreStream(ctx, nc, first, dir); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	n, err := Layout(ctx, js)
	if err != nil {
		return nil, err
	}
	streams := Streams(n)
	for _, s := range streams {
		if s == first {
			continue
		}
		if err := restoreStream(ctx, nc, s, dir); err != nil {
			return nil, err
		}
	}
	return streams, nil
}

func restoreStream(ctx context.Context, nc *nats.Conn, stream, dir string) error {
	metaJSON, err := os.ReadFile(filepath.Join(dir, stream+".json"))
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, stream+".snap"))
	if err != nil {
		return err
	}
	defer f.Close()
	resp, err := nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.RESTORE."+stream, metaJSON)
	if err != nil {
		return fmt.Errorf("store: restore %s: %w", stream, err)
	}
	var start struct {
		apiError
		DeliverSubject string `json:"deliver_subject"`
	}
	if err := json.Unmarshal(resp.Data, &start); err != nil {
		return fmt.Errorf("store: restore %s: %w", stream, err)
	}
	if err := start.err("restore " + stream); err != nil {
		return err
	}
	buf := make([]byte, snapshotChunk)
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			ack, err := nc.RequestWithContext(ctx, start.DeliverSubject, buf[:n])
			if err != nil {
				return fmt.Errorf("store: restore %s: %w", stream, err)
			}
			var a apiError
			if len(ack.Data) > 0 && json.Unmarshal(ack.Data, &a) == nil && a.Error != nil {
				return a.err("restore " + stream)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	done, err := nc.RequestWithContext(ctx, start.DeliverSubject, nil)
	if err != nil {
		return fmt.Errorf("store: restore %s: %w", stream, err)
	}
	var result apiError
	if err := json.Unmarshal(done.Data, &result); err != nil {
		return fmt.Errorf("store: restore %s: %w", stream, err)
	}
	return result.err("restore " + stream)
}
