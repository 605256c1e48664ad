package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/brokertest"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// Alice invites Bob, Bob's phone rings, he accepts, the call starts, and
// Alice hangs up. In an app, nc connects to the NATS that brokerd serves;
// this example runs its own with package brokertest (an embedded server and
// a broker, as `go run ./cmd/brokerd` does), which is how an app's own tests
// can run against a real Ringer.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ringer, err := brokertest.Start(ctx) // your tests: brokertest.New(t)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ringer.Close()

	nc, err := nats.Connect(ringer.URL)
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

// Alice rings Bob and Carol at once; the first to accept gets the call
// (protocol.ModeFirst), and the other's phone stops ringing with
// ANSWERED_ELSEWHERE. Alice follows each callee through
// OnLocalInvitationLegChanged.
func ExampleClient_CreateGroupInvitation() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ringer, err := brokertest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ringer.Close()
	nc, err := nats.Connect(ringer.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()

	accepted := make(chan string, 1)
	stopped := make(chan protocol.Leg, 1)
	alice, _ := client.New(nc, "alice", "phone", client.WithHandler(client.Handler{
		OnLocalInvitationAccepted: func(li *client.LocalInvitation, _ string) { accepted <- li.Invitation().Callee },
		OnLocalInvitationLegChanged: func(li *client.LocalInvitation, leg protocol.Leg) {
			if leg.State == protocol.StateCanceled {
				stopped <- leg
			}
		},
	}))
	rings := map[string]chan *client.RemoteInvitation{"bob": make(chan *client.RemoteInvitation, 1), "carol": make(chan *client.RemoteInvitation, 1)}
	var callees []*client.Client
	for _, user := range []string{"bob", "carol"} {
		c, _ := client.New(nc, user, "phone", client.WithHandler(client.Handler{
			OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) { rings[user] <- ri },
		}))
		defer c.Close()
		callees = append(callees, c)
	}
	defer alice.Close()
	for _, c := range append(callees, alice) {
		if err := c.Login(ctx); err != nil {
			fmt.Println(err)
			return
		}
	}

	inv := alice.CreateGroupInvitation(protocol.ModeFirst, "bob", "carol")
	if err := inv.Send(ctx); err != nil {
		fmt.Println(err)
		return
	}
	<-rings["bob"]
	carol := <-rings["carol"]
	if err := carol.Accept(ctx, ""); err != nil {
		fmt.Println(err)
		return
	}
	leg := <-stopped
	fmt.Printf("%s stops ringing: %s\n", leg.User, leg.Reason)
	fmt.Println("alice is in a call with", <-accepted)
	// Output:
	// bob stops ringing: ANSWERED_ELSEWHERE
	// alice is in a call with carol
}
