package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestTLSObjectsAndParameters(t *testing.T) {
	target := MigrationTLS{Dir: "/run/x/migration-tls-1", AllowedPeers: []string{"CN=system:ferry-node:*"}}
	source := MigrationTLS{Dir: "/run/y/migration-tls-2", Hostname: "node-2"}
	for _, tc := range []struct {
		name     string
		endpoint string
		t        MigrationTLS
		objects  []map[string]any
		params   map[string]any
	}{
		{"target restricting its peers", "server", target, []map[string]any{
			{"qom-type": "authz-list", "id": "ferry-migration-authz", "policy": "deny",
				"rules": []map[string]any{{"match": "CN=system:ferry-node:*", "policy": "allow", "format": "glob"}}},
			{"qom-type": "tls-creds-x509", "id": "ferry-migration-tls", "dir": target.Dir, "endpoint": "server", "verify-peer": true},
		}, map[string]any{"tls-creds": "ferry-migration-tls", "tls-authz": "ferry-migration-authz"}},
		{"target taking any certificate of the CA", "server", MigrationTLS{Dir: "/d"}, []map[string]any{
			{"qom-type": "tls-creds-x509", "id": "ferry-migration-tls", "dir": "/d", "endpoint": "server", "verify-peer": true},
		}, map[string]any{"tls-creds": "ferry-migration-tls", "tls-authz": ""}},
		{"source", "client", source, []map[string]any{
			{"qom-type": "tls-creds-x509", "id": "ferry-migration-tls", "dir": source.Dir, "endpoint": "client", "verify-peer": true},
		}, map[string]any{"tls-creds": "ferry-migration-tls", "tls-hostname": "node-2"}},
	} {
		if got := tlsObjects(tc.endpoint, tc.t); !reflect.DeepEqual(got, tc.objects) {
			t.Errorf("%s: objects\n%v\nwant\n%v", tc.name, got, tc.objects)
		}
		if got := tlsParameters(tc.endpoint, tc.t); !reflect.DeepEqual(got, tc.params) {
			t.Errorf("%s: parameters %v, want %v", tc.name, got, tc.params)
		}
	}
	if err := checkTLS("client", MigrationTLS{Dir: "/d"}); err == nil || !strings.Contains(err.Error(), "host name") {
		t.Errorf("a source without the target's name: %v", err)
	}
	if err := checkTLS("server", MigrationTLS{}); err == nil {
		t.Error("TLS without a directory was taken")
	}
	if d := (*MigrationTLS)(nil).Describe(); d != "plain TCP" {
		t.Errorf("nil describes as %q", d)
	}
}

// recordingQMP answers like QEMU for the migration commands and records them; drop names
// a parameter it forgets (as a QEMU that did not take it).
func recordingQMP(t *testing.T, drop string) (string, func() []string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var seen []string
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		send := func(v any) { b, _ := json.Marshal(v); conn.Write(append(b, '\r', '\n')) }
		send(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
		params := map[string]any{"tls-creds": "", "tls-hostname": "", "tls-authz": "", "max-bandwidth": 134217728}
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd struct {
				Execute   string         `json:"execute"`
				Arguments map[string]any `json:"arguments"`
				ID        any            `json:"id"`
			}
			json.Unmarshal(sc.Bytes(), &cmd)
			args, _ := json.Marshal(cmd.Arguments)
			mu.Lock()
			seen = append(seen, strings.TrimSuffix(cmd.Execute+" "+string(args), " null"))
			mu.Unlock()
			var ret any = map[string]any{}
			switch cmd.Execute {
			case "object-del":
				send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "object '" + cmd.Arguments["id"].(string) + "' not found"}, "id": cmd.ID})
				continue
			case "migrate-set-parameters":
				for k, v := range cmd.Arguments {
					if k != drop {
						params[k] = v
					}
				}
			case "query-migrate-parameters":
				ret = params
			}
			send(map[string]any{"return": ret, "id": cmd.ID})
		}
	}()
	return sock, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

func instanceOn(t *testing.T, sock string, incoming bool) *Instance {
	t.Helper()
	c, err := DialQMP(context.Background(), sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Instance{cfg: Config{Incoming: incoming}, qmp: c}
}

func TestMigrationTLSCommands(t *testing.T) {
	ctx := context.Background()
	sock, seen := recordingQMP(t, "")
	dst := instanceOn(t, sock, true)
	if err := dst.PrepareIncoming(ctx, "tcp:10.66.0.12:4444", &MigrationTLS{Dir: "/s", AllowedPeers: []string{"CN=system:ferry-node:*"}}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`qmp_capabilities`,
		`object-del {"id":"ferry-migration-tls"}`,
		`object-del {"id":"ferry-migration-authz"}`,
		`object-add {"id":"ferry-migration-authz","policy":"deny","qom-type":"authz-list","rules":[{"format":"glob","match":"CN=system:ferry-node:*","policy":"allow"}]}`,
		`object-add {"dir":"/s","endpoint":"server","id":"ferry-migration-tls","qom-type":"tls-creds-x509","verify-peer":true}`,
		`migrate-set-parameters {"tls-authz":"ferry-migration-authz","tls-creds":"ferry-migration-tls"}`,
		`query-migrate-parameters`,
		`migrate-incoming {"uri":"tcp:10.66.0.12:4444"}`,
	}
	if got := seen(); !reflect.DeepEqual(got, want) {
		t.Errorf("target commands:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	sock, seen = recordingQMP(t, "")
	src := instanceOn(t, sock, false)
	p := MigrationParams{MaxBandwidth: 1 << 30, TLS: &MigrationTLS{Dir: "/c", Hostname: "node-2"}}
	if err := src.MigrateOut(ctx, "tcp:10.66.0.12:4444", p); err != nil {
		t.Fatal(err)
	}
	got := seen()
	for _, w := range []string{
		`object-add {"dir":"/c","endpoint":"client","id":"ferry-migration-tls","qom-type":"tls-creds-x509","verify-peer":true}`,
		`migrate-set-parameters {"max-bandwidth":1073741824,"tls-creds":"ferry-migration-tls","tls-hostname":"node-2"}`,
		`migrate {"uri":"tcp:10.66.0.12:4444"}`,
	} {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("source commands lack %s:\n  %s", w, strings.Join(got, "\n  "))
		}
	}

	// A QEMU that does not keep tls-hostname: no migration starts (it would not check the
	// target's name).
	sock, seen = recordingQMP(t, "tls-hostname")
	src = instanceOn(t, sock, false)
	err := src.MigrateOut(ctx, "tcp:10.66.0.12:4444", p)
	if err == nil || !strings.Contains(err.Error(), "tls-hostname") {
		t.Errorf("MigrateOut with a parameter dropped: %v", err)
	}
	for _, g := range seen() {
		if strings.HasPrefix(g, "migrate ") {
			t.Errorf("migrate was sent: %s", g)
		}
	}
}
