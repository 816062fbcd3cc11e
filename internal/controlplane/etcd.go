package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// etcdPorts is persisted in DataDir/etcd-ports.json so that a restart keeps
// the member's peer URL (which is recorded in the cluster membership).
type etcdPorts struct {
	Client int `json:"client"`
	Peer   int `json:"peer"`
}

// freePort asks the kernel for a free TCP port on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(host string, port int) bool {
	if port <= 0 {
		return false
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// choosePorts reuses the persisted ports when they are free and picks new
// loopback ports otherwise.
func choosePorts(path string) (etcdPorts, error) {
	var p etcdPorts
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &p)
	}
	var err error
	if !portFree("127.0.0.1", p.Client) {
		if p.Client, err = freePort("127.0.0.1"); err != nil {
			return p, err
		}
	}
	if !portFree("127.0.0.1", p.Peer) || p.Peer == p.Client {
		if p.Peer, err = freePort("127.0.0.1"); err != nil {
			return p, err
		}
	}
	data, _ := json.Marshal(p)
	return p, writeFile(path, data, 0o644)
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}

// startEtcd starts an embedded single-member etcd with its data in
// dataDir/etcd, serving plain HTTP on loopback only.
func startEtcd(dataDir string, logOut io.Writer) (*embed.Etcd, string, error) {
	ports, err := choosePorts(filepath.Join(dataDir, "etcd-ports.json"))
	if err != nil {
		return nil, "", fmt.Errorf("etcd ports: %w", err)
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports.Client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports.Peer)

	cfg := embed.NewConfig()
	cfg.Name = "ferry"
	cfg.Dir = filepath.Join(dataDir, "etcd")
	cfg.ListenClientUrls = []url.URL{mustURL(clientURL)}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{mustURL(peerURL)}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.Name + "=" + peerURL
	cfg.InitialClusterToken = "ferry"
	cfg.ListenMetricsUrls = nil
	cfg.EnableGRPCGateway = false
	// Keep the keyspace bounded for a long-running single node.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"

	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(logOut), zap.InfoLevel)
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core, zap.ErrorOutput(zapcore.AddSync(logOut))))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		closeEtcd(e, 5*time.Second)
		return nil, "", fmt.Errorf("etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		closeEtcd(e, 5*time.Second)
		return nil, "", errors.New("etcd did not become ready within 60s")
	}
	return e, clientURL, nil
}

// closeEtcd closes e, giving up after timeout.
func closeEtcd(e *embed.Etcd, timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Close()
	}()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("etcd did not stop within %s", timeout)
	}
}
