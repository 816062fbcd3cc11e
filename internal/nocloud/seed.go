package nocloud

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
)

// Labels of the images: cloud-init's NoCloud datasource looks for a filesystem labelled
// "cidata"; Windows setup searches every drive for its answer files, so that label only
// tells people what the disk is.
const (
	LabelNoCloud = "cidata"
	LabelSysprep = "sysprep"
)

// File is one file of an image, in its root directory.
type File struct {
	Name string
	Data []byte
}

// Seed is what a VM's NoCloud seed says.
type Seed struct {
	// InstanceID is the VM's UID: it stays the same across restarts, migrations and
	// failovers, so cloud-init runs its once-per-instance modules (users, keys) once.
	InstanceID string
	// Hostname is the VM's name.
	Hostname string
	// UserData is the user's cloud-init user-data, passed on unchanged.
	UserData []byte
	// MAC is the guest NIC's address; nil writes no network-config (the VM has no NIC).
	MAC net.HardwareAddr
}

// metaValue is what may stand unquoted as a YAML value in meta-data: a Kubernetes UID or
// object name always fits, and anything else is refused rather than quoted wrongly.
var metaValue = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Files renders the seed's files, sorted by name.
func (s Seed) Files() ([]File, error) {
	if !metaValue.MatchString(s.InstanceID) {
		return nil, fmt.Errorf("instance-id %q: want letters, digits, '.', '-' or '_'", s.InstanceID)
	}
	if !metaValue.MatchString(s.Hostname) {
		return nil, fmt.Errorf("hostname %q: want letters, digits, '.', '-' or '_'", s.Hostname)
	}
	files := []File{
		{Name: "meta-data", Data: fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: %s\n", s.InstanceID, s.Hostname)},
		{Name: "user-data", Data: slices.Clone(s.UserData)},
	}
	if s.MAC != nil {
		if len(s.MAC) != 6 {
			return nil, fmt.Errorf("MAC %s: want a 6-byte Ethernet address", s.MAC)
		}
		// Matched by MAC, not by name: the NIC's name depends on the guest (ens4 on
		// Debian with a virtio NIC on slot 4, eth0 elsewhere).
		files = append(files, File{Name: "network-config", Data: fmt.Appendf(nil,
			"version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"%s\"\n    dhcp4: true\n", strings.ToLower(s.MAC.String()))})
	}
	sortFiles(files)
	return files, nil
}

// SysprepFiles turns a Secret's data into the files of a Sysprep CD-ROM (autounattend.xml,
// unattend.xml, and whatever else the Secret holds).
func SysprepFiles(data map[string][]byte) ([]File, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("no files: put autounattend.xml or unattend.xml in the Secret")
	}
	files := make([]File, 0, len(data))
	for name, b := range data {
		if err := checkName(name); err != nil {
			return nil, err
		}
		files = append(files, File{Name: name, Data: slices.Clone(b)})
	}
	sortFiles(files)
	return files, nil
}

// maxName is the longest name Joliet holds (64 UCS-2 characters); Windows reads only the
// Joliet names.
const maxName = 64

// fileName is what a Secret's key may be, and so every name an image holds.
var fileName = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)

func checkName(name string) error {
	switch {
	case name == "." || name == "..":
		return fmt.Errorf("file name %q is not a file name", name)
	case !fileName.MatchString(name):
		return fmt.Errorf("file name %q: use letters, digits, '-', '_' and '.'", name)
	case len(name) > maxName:
		return fmt.Errorf("file name %q is longer than %d characters, which Windows cannot read from a CD-ROM", name, maxName)
	}
	return nil
}

func sortFiles(files []File) {
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
}

// Hash identifies an image by its label and files: equal for equal content, and short
// enough for a file name.
func Hash(label string, files []File) string {
	h := sha256.New()
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte(label))
	for _, f := range files {
		put([]byte(f.Name))
		put(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
