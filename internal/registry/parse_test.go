package registry

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

var (
	digestA = "sha256:" + strings.Repeat("a", 64)
	digestB = "sha256:" + strings.Repeat("b", 64)
)

func TestParseReference(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Reference
		host string
	}{
		{"debian", Reference{Registry: "docker.io", Repository: "library/debian", Tag: "latest"}, "registry-1.docker.io"},
		{"docker.io/user/ubuntu2404:latest", Reference{Registry: "docker.io", Repository: "user/ubuntu2404", Tag: "latest"}, "registry-1.docker.io"},
		{"index.docker.io/user/x:1", Reference{Registry: "docker.io", Repository: "user/x", Tag: "1"}, "registry-1.docker.io"},
		{"registry.example.com/images/slackware:15", Reference{Registry: "registry.example.com", Repository: "images/slackware", Tag: "15"}, "registry.example.com"},
		{"127.0.0.1:8449/disks/tiny:v1", Reference{Registry: "127.0.0.1:8449", Repository: "disks/tiny", Tag: "v1"}, "127.0.0.1:8449"},
		{"localhost/disk", Reference{Registry: "localhost", Repository: "disk", Tag: "latest"}, "localhost"},
		{"Reg.Example.com:5000/a/b@" + digestA, Reference{Registry: "reg.example.com:5000", Repository: "a/b", Digest: digestA}, "reg.example.com:5000"},
		{"r.io/a:tag@sha256:" + strings.Repeat("A", 64), Reference{Registry: "r.io", Repository: "a", Digest: digestA}, "r.io"},
	} {
		got, err := ParseReference(c.in)
		if err != nil || got != c.want || got.Host() != c.host {
			t.Errorf("ParseReference(%q) = %+v (host %s), %v; want %+v (host %s)", c.in, got, got.Host(), err, c.want, c.host)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "r.io/a/../b", "r.io/a:", "r.io/a:-x", "r.io/a@sha256:abc", "r.io/a@md5:" + strings.Repeat("a", 32),
		"r.io/", "r.io//a", "-r.io/a", "r_io.com:x/a", "r.io/a?x=1", "r.io/a#b", "r.io/a b"} {
		if got, err := ParseReference(bad); err == nil {
			t.Errorf("ParseReference(%q) = %+v, want an error", bad, got)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8449": true, "127.9.9.9": true, "localhost:5000": true, "LOCALHOST": true, "[::1]:5000": true,
		"10.0.0.1:5000": false, "192.168.1.1": false, "registry.example.com": false, "localhost.example.com": false, "127.0.0.1.nip.io": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseManifest(t *testing.T) {
	layer := `{"mediaType":"` + MediaTypeOCILayerGzip + `","digest":"` + digestA + `","size":10}`
	manifest := `{"schemaVersion":2,"config":{"mediaType":"x","digest":"` + digestB + `","size":2},"layers":[` + layer + `]}`
	index := `{"schemaVersion":2,"manifests":[{"mediaType":"` + MediaTypeOCIManifest + `","digest":"` + digestA + `","size":10,"platform":{"architecture":"amd64","os":"linux"}}]}`
	for _, c := range []struct {
		contentType, body string
		index             bool
		mediaType         string
	}{
		{"", manifest, false, MediaTypeOCIManifest},
		{MediaTypeDockerManifest, manifest, false, MediaTypeDockerManifest},
		{"application/json; charset=utf-8", manifest, false, MediaTypeOCIManifest},
		{"", index, true, MediaTypeOCIIndex},
		{MediaTypeDockerList, index, true, MediaTypeDockerList},
		{MediaTypeDockerList, strings.Replace(index, "{", `{"mediaType":"`+MediaTypeOCIIndex+`",`, 1), true, MediaTypeOCIIndex},
	} {
		p, err := ParseManifest(c.contentType, []byte(c.body))
		switch {
		case err != nil:
			t.Errorf("ParseManifest(%q, %s): %v", c.contentType, c.body, err)
		case c.index && (p.Index == nil || p.Index.MediaType != c.mediaType):
			t.Errorf("ParseManifest(%q, %s) = %+v, want an index of %s", c.contentType, c.body, p, c.mediaType)
		case !c.index && (p.Manifest == nil || p.Manifest.MediaType != c.mediaType || len(p.Manifest.Layers) != 1):
			t.Errorf("ParseManifest(%q, %s) = %+v, want a manifest of %s", c.contentType, c.body, p, c.mediaType)
		}
	}
	for _, c := range []struct{ contentType, body, want string }{
		{"", `not json`, "no JSON"},
		{"application/vnd.docker.distribution.manifest.v1+prettyjws", `{"schemaVersion":1}`, "schema 1"},
		{"text/html", `{}`, "not an image manifest"},
		{"", `{"schemaVersion":1,"layers":[]}`, "schemaVersion"},
		{"", `{"schemaVersion":2,"layers":[]}`, "0 layers"},
		{"", `{"schemaVersion":2,"manifests":[]}`, "0 manifests"},
		{"", strings.Replace(manifest, digestA, "sha256:zz", 1), "digest"},
		{"", strings.Replace(manifest, `"size":10`, `"size":-1`, 1), "negative"},
		{"", strings.Replace(index, digestA, "md5:00", 1), "digest"},
	} {
		if p, err := ParseManifest(c.contentType, []byte(c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseManifest(%q, %s) = %+v, %v; want an error with %q", c.contentType, c.body, p, err, c.want)
		}
	}
}

func TestIndexSelect(t *testing.T) {
	entry := func(os, arch string) Descriptor {
		return Descriptor{MediaType: MediaTypeOCIManifest, Digest: DigestOf([]byte(os + arch)), Platform: &Platform{OS: os, Architecture: arch}}
	}
	ix := Index{Manifests: []Descriptor{entry("linux", "arm64"), entry("unknown", "unknown"), entry("linux", "amd64")}}
	if d, err := ix.Select("linux", "amd64"); err != nil || d.Digest != entry("linux", "amd64").Digest {
		t.Errorf("Select = %+v, %v", d, err)
	}
	only := Index{Manifests: []Descriptor{{MediaType: MediaTypeOCIManifest, Digest: digestA}}}
	if d, err := only.Select("linux", "amd64"); err != nil || d.Digest != digestA {
		t.Errorf("an index of one entry without platform: %+v, %v", d, err)
	}
	arm := Index{Manifests: []Descriptor{entry("linux", "arm64"), {Digest: digestA}}}
	if _, err := arm.Select("linux", "amd64"); err == nil || !strings.Contains(err.Error(), "it has linux/arm64, no platform") {
		t.Errorf("no amd64: %v", err)
	}
	nested := Index{Manifests: []Descriptor{{MediaType: MediaTypeOCIIndex, Digest: digestA, Platform: &Platform{OS: "linux", Architecture: "amd64"}}}}
	if _, err := nested.Select("linux", "amd64"); err == nil {
		t.Error("an index entry that is an index was selected")
	}
}

func dockerConfigJSON(auths string) map[string][]byte {
	return map[string][]byte{DockerConfigJSONKey: []byte(`{"auths":` + auths + `}`)}
}

func TestParseDockerConfig(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cfg, err := ParseDockerConfig(SecretTypeDockerConfigJSON, dockerConfigJSON(`{
		"https://index.docker.io/v1/": {"auth": "`+b64("hub:pw:with:colons")+`"},
		"registry.example.com:5000": {"username": "u", "password": "p"},
		"http://127.0.0.1:8449/some/path": {"username": "x", "password": "y", "auth": "`+b64("a:b")+`"},
		"empty.example.com": {}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	for reg, want := range map[string]Credentials{
		"docker.io":                 {"hub", "pw:with:colons"},
		"registry.example.com:5000": {"u", "p"},
		"127.0.0.1:8449":            {"a", "b"},
	} {
		if got, ok := cfg.For(reg); !ok || got != want {
			t.Errorf("For(%s) = %+v, %v; want %+v", reg, got, ok, want)
		}
	}
	for _, reg := range []string{"registry.example.com", "empty.example.com", "evil.com"} {
		if got, ok := cfg.For(reg); ok {
			t.Errorf("For(%s) = %+v: credentials for another registry", reg, got)
		}
	}
	old, err := ParseDockerConfig(SecretTypeDockercfg, map[string][]byte{DockercfgKey: []byte(`{"r.io":{"auth":"` + b64("o:p") + `"}}`)})
	if c, ok := old.For("r.io"); err != nil || !ok || c != (Credentials{"o", "p"}) {
		t.Errorf("dockercfg: %+v, %v", old, err)
	}
	for _, c := range []struct {
		typ  string
		data map[string][]byte
		want string
	}{
		{"Opaque", dockerConfigJSON(`{}`), "type"},
		{SecretTypeDockerConfigJSON, map[string][]byte{"other": nil}, "no key"},
		{SecretTypeDockerConfigJSON, map[string][]byte{DockerConfigJSONKey: []byte("{")}, "JSON"},
		{SecretTypeDockerConfigJSON, dockerConfigJSON(`{"r.io":{"auth":"%%%"}}`), "base64"},
		{SecretTypeDockerConfigJSON, dockerConfigJSON(`{"r.io":{"auth":"` + b64("nocolon") + `"}}`), "user:password"},
		{SecretTypeDockerConfigJSON, dockerConfigJSON(`{"r.io":[]}`), "r.io"},
	} {
		if _, err := ParseDockerConfig(c.typ, c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseDockerConfig(%s, %s): %v, want an error with %q", c.typ, c.data, err, c.want)
		}
	}
}

func TestParseChallenge(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Challenge
	}{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"`,
			Challenge{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/debian:pull"}}},
		{`Basic realm="Registry Realm"`, Challenge{"basic", map[string]string{"realm": "Registry Realm"}}},
		{`bearer Realm=https://r/token, service=r , error="insufficient_scope"`, Challenge{"bearer", map[string]string{"realm": "https://r/token", "service": "r", "error": "insufficient_scope"}}},
		{`Bearer realm="a\"b,c"`, Challenge{"bearer", map[string]string{"realm": `a"b,c`}}},
		{`Basic`, Challenge{"basic", map[string]string{}}},
	} {
		got, ok := ParseChallenge(c.in)
		if !ok || got.Scheme != c.want.Scheme || len(got.Params) != len(c.want.Params) {
			t.Errorf("ParseChallenge(%s) = %+v, %v; want %+v", c.in, got, ok, c.want)
			continue
		}
		for k, v := range c.want.Params {
			if got.Params[k] != v {
				t.Errorf("ParseChallenge(%s)[%s] = %q, want %q", c.in, k, got.Params[k], v)
			}
		}
	}
	for _, bad := range []string{``, `realm="x"`, `Bearer realm="unclosed`, `Bearer =x`, `Bearer realm`} {
		if got, ok := ParseChallenge(bad); ok {
			t.Errorf("ParseChallenge(%s) = %+v, want no challenge", bad, got)
		}
	}
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"debian", "r.io:5000/a/b:c@" + digestA, "localhost/x", "127.0.0.1:1/a:b", "a:b:c", "@", "r.io/a@sha512:" + strings.Repeat("0", 128)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			return
		}
		// What parses is safe to put in a URL path and parses again to itself.
		if strings.ContainsAny(ref.Repository+ref.ManifestRef()+ref.Registry, "?#% \\") || strings.Contains(ref.Repository, "..") {
			t.Fatalf("ParseReference(%q) = %+v: unsafe in a URL", s, ref)
		}
		again, err := ParseReference(ref.String())
		if err != nil || again != ref {
			t.Fatalf("ParseReference(%q) = %+v, and its String %q parses to %+v, %v", s, ref, ref.String(), again, err)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add("", []byte(`{"schemaVersion":2,"layers":[{"mediaType":"x","digest":"`+digestA+`","size":1}]}`))
	f.Add(MediaTypeDockerList, []byte(`{"schemaVersion":2,"manifests":[{"digest":"`+digestA+`","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}`))
	f.Add(MediaTypeOCIIndex, []byte(`{"schemaVersion":2,"mediaType":"`+MediaTypeOCIManifest+`","manifests":[],"layers":null}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		p, err := ParseManifest(contentType, body)
		if err != nil {
			return
		}
		if (p.Manifest == nil) == (p.Index == nil) {
			t.Fatalf("ParseManifest gave %+v: one of manifest and index expected", p)
		}
		var ds []Descriptor
		if p.Manifest != nil {
			ds = p.Manifest.Layers
		} else {
			ds = p.Index.Manifests
			_, _ = p.Index.Select("linux", "amd64")
		}
		if len(ds) == 0 {
			t.Fatal("no descriptors in an accepted document")
		}
		for _, d := range ds {
			if got, err := ParseDigest(d.Digest); err != nil || got != d.Digest || d.Size < 0 {
				t.Fatalf("an accepted descriptor %+v: digest %q, %v", d, got, err)
			}
		}
	})
}

func FuzzParseDockerConfig(f *testing.F) {
	f.Add(true, []byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"r.io":{"username":"u","password":"p"}}}`))
	f.Add(false, []byte(`{"r.io":{"auth":"dTpw"}}`))
	f.Fuzz(func(t *testing.T, jsonType bool, data []byte) {
		typ, key := SecretTypeDockercfg, DockercfgKey
		if jsonType {
			typ, key = SecretTypeDockerConfigJSON, DockerConfigJSONKey
		}
		cfg, err := ParseDockerConfig(typ, map[string][]byte{key: data})
		if err != nil {
			return
		}
		for k, c := range cfg {
			if Key(k) != k {
				t.Fatalf("credentials kept under %q, which is not its own key %q", k, Key(k))
			}
			if c.Username == "" && c.Password == "" {
				t.Fatalf("empty credentials kept for %q", k)
			}
		}
		if _, err := json.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull"`)
	f.Add(`Basic realm="x\"y"`)
	f.Fuzz(func(t *testing.T, h string) {
		c, ok := ParseChallenge(h)
		if !ok {
			return
		}
		if c.Scheme == "" || c.Scheme != strings.ToLower(c.Scheme) {
			t.Fatalf("ParseChallenge(%q) = %+v: scheme", h, c)
		}
		for k := range c.Params {
			if k == "" || k != strings.ToLower(k) {
				t.Fatalf("ParseChallenge(%q) = %+v: key %q", h, c, k)
			}
		}
	})
}
