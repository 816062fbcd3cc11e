package launcher

// A fuzz target for the launcher's API (RunDir/launcher.sock). The agent is its only
// client, but what it posts to /migrate comes from a pod annotation, which whoever may
// patch the launcher pod can write: the launcher must take nothing from it that QEMU
// would read as more than a tcp:HOST:PORT.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// FuzzAPI serves arbitrary requests (method, target, body) and checks that the API answers
// each with a status it documents, an error as {"error":...}, starts a migration only
// for a request whose URI and parameters are within bounds, and hot-plugs only disks
// under the hot-plug root at a slot of the hot-plug range, in raw or qcow2.
func FuzzAPI(f *testing.F) {
	f.Add("POST", "/migrate", `{"uri":"tcp:10.0.0.2:4444","maxBandwidthBytes":1073741824,"downtimeLimitMs":300,"autoConverge":true,"completionTimeoutSeconds":150,"progressTimeoutSeconds":150,"targetNode":"node-2"}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:[fd00::2]:4444"}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:1.2.3.4:5,x=y"}`)
	f.Add("POST", "/migrate", `{"uri":"exec:cat > /tmp/x"}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:1.2.3.4:5"} {}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:1.2.3.4:5","downtimeLimitMs":-5}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:1.2.3.4:5","progressTimeoutSeconds":1e30}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:1.2.3.4:5","bandwidth":1}`)
	f.Add("POST", "/migrate", ``)
	f.Add("POST", "/migrate/cancel", ``)
	f.Add("POST", "/shutdown", `{}`)
	f.Add("GET", "/status", ``)
	f.Add("GET", "/migrate", ``)
	f.Add("DELETE", "/status/../shutdown", ``)
	f.Add("POST", "//migrate?x=1", `{}`)
	f.Add("OPTIONS", "*", ``)
	f.Add("PUT", "/blockdevices", `{"devices":[{"slot":31,"name":"data","path":"/storage/disks/ns/d.qcow2","format":"qcow2"}]}`)
	f.Add("PUT", "/blockdevices", `{"devices":[{"slot":16,"name":"a","path":"/storage/a","format":"raw","readOnly":true},{"slot":17,"name":"b","path":"/storage/b","format":"qcow2"}]}`)
	f.Add("PUT", "/blockdevices", `{"devices":[{"slot":31,"name":"x","path":"/storage/../etc/shadow","format":"raw"}]}`)
	f.Add("PUT", "/blockdevices", `{"devices":[{"slot":2,"name":"x","path":"/storage/x","format":"raw"}]}`)
	f.Add("PUT", "/blockdevices", `{"devices":[{"slot":31,"name":"x","path":"/storage/x,file.driver=ssh","format":"raw"}]}`)
	f.Add("PUT", "/blockdevices", `{"devices":[]}`)
	f.Add("PUT", "/blockdevices", `{"devices":null} {}`)
	f.Add("POST", "/migrate", `{"uri":"tcp:1.2.3.4:5","blockDevices":[{"slot":31,"path":"/storage/x"}]}`)

	migrateErr := errors.New("fuzz: no migration")
	runDir := f.TempDir()
	f.Fuzz(func(t *testing.T, method, target, body string) {
		raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: launcher\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", method, target, len(body), body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // the server would not have parsed it either
		}

		fake := hypervisor.NewFake(hypervisor.Config{Name: "fuzz"})
		var started []string
		fake.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
			started = append(started, uri)
			if err := checkOutgoing(uri, p); err != nil {
				t.Errorf("%s %s %q: migration started with %v", method, target, body, err)
			}
			return migrateErr
		}
		l := newLauncher(Options{VMName: "fuzz", RunDir: runDir}, fake, fake, &logger{})
		l.memoryKiB = 1 << 20
		l.hp = newHotplug(fuzzRoot, nil, false)
		rec := httptest.NewRecorder()
		l.handler().ServeHTTP(rec, req)
		for range MaxBlockDevices + 1 {
			if l.hotplugStep(context.Background(), l.hp, fake) >= 0 {
				break
			}
		}
		for _, d := range fake.HotplugDisks() {
			if err := d.Validate(); err != nil || !within(fuzzRoot, d.Path) || filepath.Clean(d.Path) != d.Path {
				t.Errorf("%s %s %q: hot-plugged %+v (%v)", method, target, body, d, err)
			}
		}

		code, out := rec.Code, rec.Body.Bytes()
		if req.RequestURI == "*" && code == http.StatusBadRequest {
			return // ServeMux's answer to "OPTIONS *" and the like
		}
		switch code {
		case http.StatusOK, http.StatusAccepted:
			if !json.Valid(out) {
				t.Fatalf("%s %s: %d with a body that is not JSON: %q", method, target, code, out)
			}
		case http.StatusBadRequest, http.StatusConflict, http.StatusInternalServerError:
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(out, &e); err != nil || e.Error == "" {
				t.Fatalf("%s %s: %d with a body that is no {\"error\":...}: %q", method, target, code, out)
			}
			if code == http.StatusInternalServerError && !strings.Contains(e.Error, migrateErr.Error()) {
				t.Fatalf("%s %s: 500 for another reason than the fake's refusal: %s", method, target, e.Error)
			}
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusMovedPermanently, http.StatusTemporaryRedirect:
			// ServeMux's answers for other paths and methods.
		default:
			t.Fatalf("%s %s %q: status %d, which the API does not document", method, target, body, code)
		}
		if len(started) > 0 && code != http.StatusInternalServerError {
			t.Fatalf("%s %s %q: a migration was started, yet the answer was %d", method, target, body, code)
		}
		if m := l.mig; m != nil && (m.completion <= 0 || m.completion > maxTimeoutSeconds*time.Second || m.progress <= 0 || m.progress > maxTimeoutSeconds*time.Second) {
			t.Fatalf("%s %s %q: migration timeouts %v and %v, outside (0, %ds]", method, target, body, m.completion, m.progress, maxTimeoutSeconds)
		}
		if code == http.StatusBadRequest && fake.Calls() != nil {
			t.Fatalf("%s %s %q: refused as bad, yet the VM was called: %v", method, target, body, fake.Calls())
		}
	})
}

// fuzzRoot is the hot-plug root of FuzzAPI's launchers.
const fuzzRoot = "/storage"

// checkOutgoing says what is wrong with a migration the launcher asked QEMU for: QEMU
// reads the URI as options (a comma starts another), so it must be exactly tcp:HOST:PORT,
// and the parameters must be within what the API documents.
func checkOutgoing(uri string, p hypervisor.MigrationParams) error {
	rest, ok := strings.CutPrefix(uri, "tcp:")
	if !ok || strings.ContainsAny(rest, ", \t\r\n") {
		return fmt.Errorf("URI %q", uri)
	}
	host, port, err := net.SplitHostPort(rest)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || n < 1 || n > 65535 {
		return fmt.Errorf("URI %q", uri)
	}
	if p.MaxBandwidth <= 0 || p.DowntimeLimit <= 0 || p.DowntimeLimit > maxDowntimeLimitMs*time.Millisecond || p.TLS != nil {
		return fmt.Errorf("parameters %+v", p)
	}
	return nil
}
