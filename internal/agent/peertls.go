package agent

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

// The peer check is mutual TLS with the nodes' migration certificates. A peer's answer
// decides whether a node cut off from the control plane keeps feeding its watchdog, so an
// answer counts only from the node that was asked: its certificate, signed by the migration
// CA, must name that node (common name system:ferry-node:<node>, the node name its DNS
// name), and so must the answer. The answering side takes questions only from a Ferry node's
// certificate of that CA. Anything else (plain HTTP, another CA, another node's certificate,
// no certificate) is a peer that did not answer: the node is left to its watchdog, as when
// it is cut off alone.
//
// Both sides read the node's credentials from its directory at each handshake (server) or
// question (client): a renewed certificate, or a new CA after the signer's CA was replaced,
// is used as soon as the keeper (package migrationcert) has written it. Reading three small
// files costs less than the handshake's own signatures, and questions come only while the
// node's Lease renewals fail.

// maxAnswer bounds what is read of a peer's answer: a few hundred bytes of JSON.
const maxAnswer = 4 << 10

// identity is the node's certificate and key for the peer check, with the CA it trusts.
type identity struct {
	pair  tls.Certificate
	creds *migrationtls.Credentials
}

// identity reads the node's credentials and checks that they are this node's and valid now.
func (p *peers) identity() (*identity, error) {
	c, err := p.creds()
	if err != nil {
		return nil, err
	}
	if err := c.Check(p.self, time.Now()); err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, err
	}
	return &identity{pair: pair, creds: c}, nil
}

// serverConfig is the answering side's TLS, made anew for each connection: the node's
// current certificate, and a client certificate of the current CA that is a Ferry node's.
func (p *peers) serverConfig(*tls.ClientHelloInfo) (*tls.Config, error) {
	if p.down != nil && p.down() {
		return nil, errors.New("the node's network is down")
	}
	id, err := p.identity()
	if err != nil {
		return nil, fmt.Errorf("this node cannot answer its peers: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.creds.Roots,
		// The chain and the client usage are verified by then. The signer issues nothing
		// but node certificates; checked here as well, so that this side does not rest on it.
		VerifyConnection: func(cs tls.ConnectionState) error {
			cn := cs.PeerCertificates[0].Subject.CommonName
			if _, ok := migrationtls.NodeOf(cn); !ok {
				return fmt.Errorf("client certificate for %q, not a Ferry node's", cn)
			}
			return nil
		},
	}, nil
}

// clientConfig is the asking side's TLS for a question to node: the node's certificate
// as client, and only node's certificate, of the CA id trusts, as server.
func (id *identity) clientConfig(node string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    id.creds.Roots,
		// A node's certificate has the node name as its only DNS name: the handshake
		// verifies the chain, the server usage and that name.
		ServerName: node,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &id.pair, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != migrationtls.NodeCN(node) {
				return fmt.Errorf("the peer's certificate is for %q, not node %s", cn, node)
			}
			return nil
		},
	}
}

// peerAnswerWire is a peerAnswer as sent: whether the peer reaches the control plane must
// be said, not left out (false, which would count towards an outage).
type peerAnswerWire struct {
	Node      string    `json:"node"`
	Reachable *bool     `json:"controlPlaneReachable"`
	LastRenew time.Time `json:"lastRenewal"`
}

// decodeAnswer reads node's answer: one JSON object, at most maxAnswer bytes, that names
// node and says whether it reaches the control plane.
func decodeAnswer(r io.Reader, node string) (peerAnswer, error) {
	var w peerAnswerWire
	dec := json.NewDecoder(io.LimitReader(r, maxAnswer))
	if err := dec.Decode(&w); err != nil {
		return peerAnswer{}, fmt.Errorf("node %s's answer: %w", node, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return peerAnswer{}, fmt.Errorf("node %s's answer: more than one JSON value", node)
	}
	switch {
	case w.Node != node:
		return peerAnswer{}, fmt.Errorf("node %s answered for node %q", node, w.Node)
	case w.Reachable == nil:
		return peerAnswer{}, fmt.Errorf("node %s's answer does not say whether it reaches the control plane", node)
	}
	return peerAnswer{Node: w.Node, Reachable: *w.Reachable, LastRenew: w.LastRenew}, nil
}

// handshakeLog takes the peer endpoint's http.Server errors (refused handshakes: a node
// without a certificate yet, another CA, a port scanner) to the agent's log, verbose: the
// asking node logs what it could not learn.
type handshakeLog struct{ log logr.Logger }

func (h handshakeLog) Write(b []byte) (int, error) {
	h.log.V(1).Info("A peer's connection failed", "error", strings.TrimSpace(string(b)))
	return len(b), nil
}
