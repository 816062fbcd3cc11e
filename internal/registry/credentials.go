package registry

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Secret types and keys of registry credentials (core/v1's names, without importing it).
const (
	SecretTypeDockerConfigJSON = "kubernetes.io/dockerconfigjson"
	SecretTypeDockercfg        = "kubernetes.io/dockercfg"
	DockerConfigJSONKey        = ".dockerconfigjson"
	DockercfgKey               = ".dockercfg"
)

// Credentials log in to one registry.
type Credentials struct {
	Username, Password string
}

// DockerConfig is the credentials of a pull Secret, by registry.
type DockerConfig map[string]Credentials

// ParseDockerConfig reads the credentials of a Secret of type kubernetes.io/dockerconfigjson
// ({"auths": {registry: entry}}) or kubernetes.io/dockercfg ({registry: entry}). An entry's
// "auth" (base64 of user:password) wins over its username and password, as with the
// kubelet. Registries are keyed as Key normalises them.
func ParseDockerConfig(secretType string, data map[string][]byte) (DockerConfig, error) {
	var entries map[string]json.RawMessage
	switch secretType {
	case SecretTypeDockerConfigJSON:
		raw, ok := data[DockerConfigJSONKey]
		if !ok {
			return nil, fmt.Errorf("the Secret has no key %s", DockerConfigJSONKey)
		}
		var doc struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("%s is no JSON document: %w", DockerConfigJSONKey, err)
		}
		entries = doc.Auths
	case SecretTypeDockercfg:
		raw, ok := data[DockercfgKey]
		if !ok {
			return nil, fmt.Errorf("the Secret has no key %s", DockercfgKey)
		}
		if err := json.Unmarshal(raw, &entries); err != nil {
			return nil, fmt.Errorf("%s is no JSON document: %w", DockercfgKey, err)
		}
	default:
		return nil, fmt.Errorf("the Secret's type is %q: registry credentials are in a Secret of type %s (or %s)", secretType, SecretTypeDockerConfigJSON, SecretTypeDockercfg)
	}
	cfg := DockerConfig{}
	for name, raw := range entries {
		var e struct {
			Username string `json:"username"`
			Password string `json:"password"`
			Auth     string `json:"auth"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("the entry of %q: %w", name, err)
		}
		c := Credentials{Username: e.Username, Password: e.Password}
		if e.Auth != "" {
			b, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("the entry of %q: auth is not base64: %w", name, err)
			}
			user, pass, ok := strings.Cut(string(b), ":")
			if !ok {
				return nil, fmt.Errorf("the entry of %q: auth is not base64 of user:password", name)
			}
			c = Credentials{Username: user, Password: pass}
		}
		if c.Username == "" && c.Password == "" {
			continue
		}
		cfg[Key(name)] = c
	}
	return cfg, nil
}

// For returns the credentials of a registry (as Reference.Registry names it).
func (c DockerConfig) For(registry string) (Credentials, bool) {
	cr, ok := c[Key(registry)]
	return cr, ok
}

// Key is the host[:port] a credentials entry is for: a scheme and a path are dropped
// (https://index.docker.io/v1/ is Docker Hub's) and Docker Hub's names are one.
func Key(name string) string {
	s := strings.TrimSpace(name)
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil {
			s = u.Host
		}
	}
	s, _, _ = strings.Cut(s, "/")
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "index.docker.io", dockerHubHost:
		return DockerHub
	}
	return s
}
