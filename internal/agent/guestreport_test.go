package agent

import (
	"encoding/json"
	"reflect"
	"testing"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/guestagent"
	"github.com/ferryvm/ferry/internal/launcher"
)

// The launcher keeps copies of API types so as not to link them; launchers of other
// releases send the API's JSON, so both must read and write the same.
func TestGuestReportMatchesAPI(t *testing.T) {
	r := &launcher.GuestReport{
		OS: &guestagent.OSInfo{ID: "debian", Name: "Debian GNU/Linux", PrettyName: "Debian GNU/Linux 12 (bookworm)", Version: "12 (bookworm)",
			VersionID: "12", KernelRelease: "6.1.0-28-cloud-amd64", KernelVersion: "#1 SMP", Machine: "x86_64"},
		Hostname:   "vm-1",
		Interfaces: []guestagent.Interface{{Name: "ens4", MAC: "52:54:00:00:00:01", IPAddresses: []string{"10.66.10.5", "fd00::5"}}},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var api v1alpha2.GuestAgentReport
	if err := json.Unmarshal(b, &api); err != nil {
		t.Fatal(err)
	}
	if got := guestReport(r); !reflect.DeepEqual(*got, api) {
		t.Errorf("converted %+v, from JSON %+v", got, api)
	}
	ab, err := json.Marshal(api)
	if err != nil {
		t.Fatal(err)
	}
	if string(ab) != string(b) {
		t.Errorf("JSON differs:\nlauncher %s\napi      %s", b, ab)
	}
	if got := guestReport(nil); !reflect.DeepEqual(*got, v1alpha2.GuestAgentReport{}) {
		t.Errorf("nil report: %+v", got)
	}
	if launcher.ExitMigrated != v1alpha2.LauncherExitMigrated || launcher.ExitSuperseded != v1alpha2.LauncherExitSuperseded {
		t.Errorf("launcher exit codes %d, %d; API %d, %d", launcher.ExitMigrated, launcher.ExitSuperseded, v1alpha2.LauncherExitMigrated, v1alpha2.LauncherExitSuperseded)
	}
}
