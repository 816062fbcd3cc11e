package registry

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// DockerHub is the registry of references that name none, as Docker has it.
const DockerHub = "docker.io"

// dockerHubHost is where Docker Hub's registry API answers.
const dockerHubHost = "registry-1.docker.io"

var (
	// A repository path component, as the distribution spec's grammar has it.
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hostRE      = regexp.MustCompile(`^(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$`)
)

// Reference is a parsed image reference.
type Reference struct {
	// Registry is the registry's name as written (docker.io when none was): the key its
	// credentials are found under.
	Registry string
	// Repository is the image's path in the registry, e.g. library/debian.
	Repository string
	// Tag is set unless Digest is; latest when neither was written.
	Tag string
	// Digest, e.g. sha256:…, pins the manifest; a tag written beside it is ignored.
	Digest string
}

// Host is where the registry's API answers (Docker Hub's differs from its name).
func (r Reference) Host() string {
	if r.Registry == DockerHub {
		return dockerHubHost
	}
	return r.Registry
}

// ManifestRef is what the manifest is fetched by: the digest, else the tag.
func (r Reference) ManifestRef() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

func (r Reference) String() string {
	s := r.Registry + "/" + r.Repository
	if r.Digest != "" {
		return s + "@" + r.Digest
	}
	return s + ":" + r.Tag
}

// ParseReference reads an image reference as Docker does: [host[:port]/]path[:tag][@digest].
// The first path component is a host when it has a dot or a port, or is localhost;
// otherwise the image is on Docker Hub, and a one-component path is under library/.
func ParseReference(s string) (Reference, error) {
	if s == "" || len(s) > 512 {
		return Reference{}, fmt.Errorf("image reference %q: empty or too long", s)
	}
	var ref Reference
	name := s
	if i := strings.IndexByte(name, '@'); i >= 0 {
		d, err := ParseDigest(name[i+1:])
		if err != nil {
			return Reference{}, fmt.Errorf("image reference %q: %w", s, err)
		}
		ref.Digest = d
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i:], "/") {
		ref.Tag = name[i+1:]
		name = name[:i]
		if !tagRE.MatchString(ref.Tag) {
			return Reference{}, fmt.Errorf("image reference %q: tag %q is not a valid tag", s, ref.Tag)
		}
	}
	first, rest, hasSlash := strings.Cut(name, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		if !hostRE.MatchString(first) {
			return Reference{}, fmt.Errorf("image reference %q: %q is not a registry host[:port]", s, first)
		}
		ref.Registry, ref.Repository = strings.ToLower(first), rest
	} else {
		ref.Registry, ref.Repository = DockerHub, name
	}
	if ref.Registry == "index.docker.io" || ref.Registry == dockerHubHost {
		ref.Registry = DockerHub
	}
	if ref.Registry == DockerHub && !strings.Contains(ref.Repository, "/") {
		ref.Repository = "library/" + ref.Repository
	}
	if err := CheckRepository(ref.Repository); err != nil {
		return Reference{}, fmt.Errorf("image reference %q: %w", s, err)
	}
	if ref.Digest != "" {
		ref.Tag = ""
	} else if ref.Tag == "" {
		ref.Tag = "latest"
	}
	return ref, nil
}

// CheckRepository refuses a repository path that is not lowercase components joined by
// slashes (the distribution spec's grammar), which also keeps it clear of URL tricks.
func CheckRepository(repo string) error {
	if repo == "" || len(repo) > 255 {
		return fmt.Errorf("repository %q: empty or longer than 255 characters", repo)
	}
	for c := range strings.SplitSeq(repo, "/") {
		if !componentRE.MatchString(c) {
			return fmt.Errorf("repository %q: %q is no valid path component (lowercase letters, digits, and . _ - between them)", repo, c)
		}
	}
	return nil
}

// CheckTag refuses what is no tag.
func CheckTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("tag %q is not a valid tag (letters, digits, _ . -, at most 128, not starting with . or -)", tag)
	}
	return nil
}

// IsLoopback tells whether a registry host[:port] is on this machine's loopback
// (localhost, 127.0.0.0/8, ::1): the only registries reached over plain HTTP.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
