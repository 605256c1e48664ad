package main

import "testing"

func TestRedactHidesPasswords(t *testing.T) {
	got := redact("nats://alice:secret@n1:4222,nats://n2:4222,tls://bob:pw@n3:4222")
	want := "nats://alice:xxxxx@n1:4222,nats://n2:4222,tls://bob:xxxxx@n3:4222"
	if got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}
