package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/embedded"
	"github.com/ringer-dev/ringer/internal/ringertest"
)

// pki is a CA and the certificates it signed, as PEM files in a directory.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// newPKI makes a CA, a certificate for the NATS servers (127.0.0.1 and
// localhost; also a client certificate, for the routes between them) and
// one for brokerd and the apps.
func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ringer test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(name string, serial int64, usage []x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = issue("nats", 2, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	p.clientCert, p.clientKey = issue("brokerd", 3, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	return p
}

// tlsClusterConf is the configuration of one node of a three-node cluster
// whose clients and routes both use TLS with verified certificates: the
// layout docs/security.md ("TLS") shows.
const tlsClusterConf = `server_name: %[1]s
listen: 127.0.0.1:-1
jetstream { store_dir: %[2]q }
tls {
  cert_file: %[3]q
  key_file: %[4]q
  ca_file: %[5]q
  verify: true          # clients must present a certificate signed by the CA
}
cluster {
  name: ringer-tls
  listen: 127.0.0.1:%[6]d
  routes: [ %[7]s ]
  tls {
    cert_file: %[3]q
    key_file: %[4]q
    ca_file: %[5]q
    verify: true
  }
}
`

// A call runs through a three-node cluster with TLS on clients and routes:
// brokerd connects with --tls-ca/--tls-cert/--tls-key, the apps with the CA
// and their certificate; a client without the CA cannot connect at all.
func TestCallOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	p := newPKI(t)
	var ports []int
	var routes []string
	for range 3 {
		port, err := embedded.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, port)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", port))
	}
	var urls []string
	for i := range 3 {
		conf := filepath.Join(t.TempDir(), "nats.conf")
		body := fmt.Sprintf(tlsClusterConf, fmt.Sprintf("n%d", i+1), t.TempDir(), p.serverCert, p.serverKey, p.ca, ports[i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs, opts.NoLog, opts.Port = true, true, -1
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}
		urls = append(urls, strings.Replace(s.ClientURL(), "nats://", "tls://", 1))
	}
	url := strings.Join(urls, ",")

	o, err := parseFlags([]string{"--nats", url, "--replicas", "3", "--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := brokerConn(o, url, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Fatal("the broker's connection is not TLS")
	}
	cfg := ringertest.TestConfig()
	cfg.Replicas = 3
	b, err := broker.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := b.StartRetrying(ctx, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Shutdown(context.Background()) }()

	login := func(user string) *ringertest.Client {
		conn, err := nats.Connect(url, nats.RootCAs(p.ca), nats.ClientCert(p.clientCert, p.clientKey))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		c := &ringertest.Client{NC: conn, Rec: ringertest.NewRecorder()}
		if c.Client, err = client.New(conn, user, "phone", client.WithHandler(c.Rec.Handler())); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Login(ringertest.Ctx(t)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob := login("alice"), login("bob")
	li := alice.Call(t, bob)
	if err := alice.Hangup(ringertest.Ctx(t), li.ID); err != nil {
		t.Fatal(err)
	}
	bob.Rec.Wait(t, "CallEnded "+li.ID)

	if c, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
		c.Close()
		t.Fatal("a client that does not trust the CA connected")
	}
}
