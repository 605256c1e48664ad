package client_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/embedded"
	"github.com/ringer-dev/ringer/protocol"
)

// Alice invites Bob, Bob's phone rings, he accepts, the call starts, and
// Alice hangs up. In an app, nc connects to the NATS that brokerd serves;
// this example runs its own (an embedded server and a broker, as
// `go run ./cmd/brokerd` does) so that it runs as it stands.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, stop, err := runBroker(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()

	accepted, ended := make(chan string, 1), make(chan string, 2)
	alice, _ := client.New(nc, "alice", "phone", client.WithHandler(client.Handler{
		OnLocalInvitationAccepted: func(li *client.LocalInvitation, response string) { accepted <- response },
	}))
	rings := make(chan *client.RemoteInvitation, 1)
	bob, _ := client.New(nc, "bob", "phone", client.WithHandler(client.Handler{
		OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) { rings <- ri }, // keep callbacks short
		OnCallEnded:                func(inv protocol.Invitation) { ended <- string(inv.Reason) },
	}))
	defer alice.Close()
	defer bob.Close()
	for _, c := range []*client.Client{alice, bob} {
		if err := c.Login(ctx); err != nil {
			fmt.Println(err)
			return
		}
	}

	inv := alice.CreateLocalInvitation("bob")
	inv.Content, inv.ChannelID = "lunch?", "room-42"
	if err := inv.Send(ctx); err != nil {
		fmt.Println(err)
		return
	}
	ri := <-rings
	fmt.Printf("bob's phone rings: %s says %q, channel %s\n", ri.CallerID(), ri.Content(), ri.ChannelID())
	if err := ri.Accept(ctx, "on my way"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("alice hears:", <-accepted)
	if err := alice.Hangup(ctx, inv.ID); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("bob's call ended:", <-ended)
	// Output:
	// bob's phone rings: alice says "lunch?", channel room-42
	// alice hears: on my way
	// bob's call ended: HANGUP
}

// runBroker starts an embedded NATS server with JetStream and a broker on it.
func runBroker(ctx context.Context) (url string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "ringer-example")
	if err != nil {
		return "", nil, err
	}
	srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	bnc, err := nats.Connect(srv.ClientURL())
	if err == nil {
		var b *broker.Broker
		if b, err = broker.New(bnc, broker.DefaultConfig()); err == nil {
			if err = b.Start(ctx); err == nil {
				return srv.ClientURL(), func() {
					_ = b.Shutdown(context.Background())
					bnc.Close()
					srv.Shutdown()
					srv.WaitForShutdown()
					os.RemoveAll(dir)
				}, nil
			}
		}
		bnc.Close()
	}
	srv.Shutdown()
	os.RemoveAll(dir)
	return "", nil, err
}
