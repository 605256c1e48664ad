package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/ringer-dev/ringer/protocol"
)

// fcmScope is the OAuth 2 scope of FCM's HTTP v1 API.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// fcmSender delivers to Firebase Cloud Messaging itself (HTTP v1): a
// service account's OAuth 2 token (golang.org/x/oauth2/google), high
// priority data-only messages, so that the app's handler runs.
type fcmSender struct {
	http *http.Client
	url  string // …/v1/projects/<project>/messages:send
}

// newFCM reads a service account's JSON key; endpoint is FCM's
// (https://fcm.googleapis.com) unless a test points it elsewhere.
func newFCM(ctx context.Context, credentials []byte, endpoint string, base *http.Client) (*fcmSender, error) {
	creds, err := google.CredentialsFromJSON(ctx, credentials, fcmScope)
	if err != nil {
		return nil, fmt.Errorf("fcm: credentials: %w", err)
	}
	if creds.ProjectID == "" {
		return nil, errors.New("fcm: the credentials name no project_id")
	}
	// The token source fetches through base (tests: a server started by
	// the test; production: http.DefaultClient).
	ctx = context.WithValue(context.Background(), oauth2.HTTPClient, base)
	client := oauth2.NewClient(ctx, oauth2.ReuseTokenSource(nil, creds.TokenSource))
	client.Timeout = base.Timeout
	return &fcmSender{http: client, url: strings.TrimSuffix(endpoint, "/") + "/v1/projects/" + creds.ProjectID + "/messages:send"}, nil
}

// fcmMessage is the body of messages:send.
type fcmMessage struct {
	Message struct {
		Token   string            `json:"token"`
		Data    map[string]string `json:"data"`
		Android struct {
			Priority    string `json:"priority"`
			TTL         string `json:"ttl"`
			CollapseKey string `json:"collapse_key"`
		} `json:"android"`
	} `json:"message"`
}

// fcmError is FCM's error answer.
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Details []struct {
			Type      string `json:"@type"`
			ErrorCode string `json:"errorCode"`
		} `json:"details"`
	} `json:"error"`
}

// code is the FCM error code (details' errorCode, else the status).
func (e *fcmError) code() string {
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	return e.Error.Status
}

// send posts d as a data-only message: data.ringer = the delivery's JSON;
// a RING lives until its deadline (android.ttl), a STOP is sent now or
// never.
func (f *fcmSender) send(ctx context.Context, d *protocol.PushDelivery, now time.Time) error {
	var m fcmMessage
	delivery, _ := json.Marshal(d)
	m.Message.Token = d.Device.Token
	m.Message.Data = map[string]string{"ringer": string(delivery)}
	m.Message.Android.Priority = "high"
	m.Message.Android.CollapseKey = d.CollapseKey
	m.Message.Android.TTL = "0s"
	if d.Kind == protocol.PushRing && d.Deadline > 0 {
		m.Message.Android.TTL = fmt.Sprintf("%ds", max(time.UnixMilli(d.Deadline).Sub(now)/time.Second, 0))
	}
	body, _ := json.Marshal(&m)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.http.Do(req)
	if err != nil {
		return &retryAfter{err: fmt.Errorf("fcm: %w", err)}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e fcmError
	_ = json.Unmarshal(answer, &e)
	err = fmt.Errorf("fcm %d %s: %s", resp.StatusCode, e.code(), e.Error.Message)
	switch e.code() {
	case "UNREGISTERED", "INVALID_ARGUMENT":
		// The token is gone (the app was removed) or malformed.
		return fmt.Errorf("%w: %v", errGone, err)
	case "QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL":
		return retry(err, resp.Header)
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return retry(err, resp.Header)
	}
	return err
}
