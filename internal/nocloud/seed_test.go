package nocloud

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeedFiles(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x66, 10, 66, 10, 5}
	s := Seed{InstanceID: "6a1f0c2e-0d7e-4f55-9b7e-1c2d3e4f5a6b", Hostname: "web-1", UserData: []byte("#cloud-config\nusers: []\n"), MAC: mac}
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var names []string
	for _, f := range files {
		got[f.Name] = string(f.Data)
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "meta-data,network-config,user-data" {
		t.Fatalf("files %v, want meta-data, network-config, user-data in that order", names)
	}
	if want := "instance-id: 6a1f0c2e-0d7e-4f55-9b7e-1c2d3e4f5a6b\nlocal-hostname: web-1\n"; got["meta-data"] != want {
		t.Errorf("meta-data:\n%s\nwant:\n%s", got["meta-data"], want)
	}
	if got["user-data"] != string(s.UserData) {
		t.Errorf("user-data changed: %q", got["user-data"])
	}
	want := "version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"02:66:0a:42:0a:05\"\n    dhcp4: true\n"
	if got["network-config"] != want {
		t.Errorf("network-config:\n%s\nwant:\n%s", got["network-config"], want)
	}

	s.MAC = nil
	files, _ = s.Files()
	for _, f := range files {
		if f.Name == "network-config" {
			t.Error("a VM without a NIC got a network-config")
		}
	}
}

func TestSeedRefusesWhatYAMLWouldMisread(t *testing.T) {
	for _, s := range []Seed{
		{InstanceID: "", Hostname: "a"},
		{InstanceID: "x", Hostname: "a: b"},
		{InstanceID: "x\nuser: root", Hostname: "a"},
		{InstanceID: "x", Hostname: "a", MAC: net.HardwareAddr{1, 2, 3}},
	} {
		if _, err := s.Files(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
}

func TestHashFollowsContent(t *testing.T) {
	a := []File{{Name: "user-data", Data: []byte("x")}}
	b := []File{{Name: "user-data", Data: []byte("y")}}
	// Shifting a byte from the name into the data must not collide.
	c := []File{{Name: "user-datax", Data: nil}}
	if Hash(LabelNoCloud, a) != Hash(LabelNoCloud, a) {
		t.Fatal("hash not stable")
	}
	if Hash(LabelNoCloud, a) == Hash(LabelNoCloud, b) || Hash(LabelNoCloud, a) == Hash(LabelNoCloud, c) || Hash(LabelNoCloud, a) == Hash(LabelSysprep, a) {
		t.Fatal("different content, same hash")
	}
}

func TestSysprepFiles(t *testing.T) {
	files, err := SysprepFiles(map[string][]byte{"unattend.xml": []byte("<u/>"), "autounattend.xml": []byte("<a/>")})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Name != "autounattend.xml" || files[1].Name != "unattend.xml" {
		t.Fatalf("files %+v", files)
	}
	if _, err := SysprepFiles(nil); err == nil || !strings.Contains(err.Error(), "autounattend.xml") {
		t.Errorf("an empty Secret: %v", err)
	}
	if _, err := SysprepFiles(map[string][]byte{strings.Repeat("a", 65): nil}); err == nil {
		t.Error("a name Joliet cannot hold was taken")
	}
}

// TestISORoundTrip writes a seed image and reads it back by its Rock Ridge names.
func TestISORoundTrip(t *testing.T) {
	s := Seed{InstanceID: "uid-1", Hostname: "a-rather-long-vm-name-with-hyphens", UserData: bytes.Repeat([]byte("#cloud-config\n"), 300), MAC: net.HardwareAddr{2, 0x66, 1, 2, 3, 4}}
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "seed.iso")
	if err := WriteISO(p, LabelNoCloud, files); err != nil {
		t.Fatal(err)
	}
	label, got, err := ReadISO(p)
	if err != nil {
		t.Fatal(err)
	}
	if label != LabelNoCloud {
		t.Errorf("label %q, want %q", label, LabelNoCloud)
	}
	if len(got) != len(files) {
		t.Errorf("read %d files, wrote %d: %v", len(got), len(files), keys(got))
	}
	for _, f := range files {
		if !bytes.Equal(got[f.Name], f.Data) {
			t.Errorf("%s: read %q, wrote %q", f.Name, got[f.Name], f.Data)
		}
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size()%sector != 0 || st.Size() > 64*sector {
		t.Errorf("image of %d bytes: want whole sectors, no padding", st.Size())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*"))
	if len(left) > 0 {
		t.Errorf("work files left beside the image: %v", left)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// FuzzSeedRoundTrip: whatever user-data a tenant writes reaches the guest byte for byte.
func FuzzSeedRoundTrip(f *testing.F) {
	f.Add([]byte("#cloud-config\nusers:\n- name: cloud\n"))
	f.Add([]byte{})
	f.Add([]byte{0, 0xff, '\n', 0xfe})
	f.Add(bytes.Repeat([]byte("é"), 1024))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, userData []byte) {
		files, err := Seed{InstanceID: "i", Hostname: "h", UserData: userData, MAC: net.HardwareAddr{2, 0x66, 0, 0, 0, 1}}.Files()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "seed.iso")
		if err := WriteISO(p, LabelNoCloud, files); err != nil {
			t.Fatal(err)
		}
		_, got, err := ReadISO(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got["user-data"], userData) {
			t.Fatalf("user-data: read %d bytes %q, wrote %d bytes %q", len(got["user-data"]), got["user-data"], len(userData), userData)
		}
	})
}

// FuzzSysprepRoundTrip: a file the Secret names reaches the guest under that name, with
// its content, or is refused with a reason.
func FuzzSysprepRoundTrip(f *testing.F) {
	f.Add("autounattend.xml", []byte("<unattend/>"))
	f.Add("Unattend.XML", []byte{})
	f.Add("a.b.c-d_e", []byte{0})
	f.Add(strings.Repeat("x", 64), []byte("y"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		files, err := SysprepFiles(map[string][]byte{name: data})
		if err != nil {
			return
		}
		p := filepath.Join(dir, "sysprep.iso")
		if err := WriteISO(p, LabelSysprep, files); err != nil {
			t.Fatalf("SysprepFiles took %q, WriteISO refused it: %v", name, err)
		}
		_, got, err := ReadISO(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !bytes.Equal(got[name], data) {
			t.Fatalf("wrote %q (%d bytes), read %q", name, len(data), keys(got))
		}
	})
}
